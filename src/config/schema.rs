//! JSON Schema (draft 2020-12) of the pipeline file, for editors and external tooling
//! (`mlink validate --schema`). It mirrors `types.rs`; a test checks that every field the
//! types accept appears here and nothing else does.

use super::types::{AdapterKind, COCO_CLASSES, COCO_GROUPS, HeadKind, PIPELINE_VERSION};
use serde_json::{Value, json};

/// The pipeline file's JSON schema.
pub fn json_schema() -> Value {
    let adapters: Vec<&str> = AdapterKind::ALL.iter().map(|a| a.name()).collect();
    let mut class_names: Vec<&str> = COCO_CLASSES.to_vec();
    class_names.extend(COCO_GROUPS.iter().map(|(g, _)| *g));
    class_names.push("face");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mlink.invalid/pipeline.schema.json",
        "title": "mlink pipeline file",
        "description": "Cameras, models, links, scheduler, adaptation, sinks and metrics of one mlink pipeline. See docs/pipeline.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["version", "cameras", "models", "scheduler"],
        "properties": {
            "version": {"const": PIPELINE_VERSION, "description": "Format version of the file; must be 1."},
            "cameras": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/camera"}, "description": "The cameras whose frames are analysed."},
            "models": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/model"}, "description": "The black-box models to run or predict."},
            "links": {"$ref": "#/$defs/links"},
            "scheduler": {"$ref": "#/$defs/scheduler"},
            "adaptation": {"$ref": "#/$defs/adaptation"},
            "sinks": {"type": "array", "items": {"$ref": "#/$defs/sink"}, "default": [], "description": "Where output records go."},
            "metrics": {"$ref": "#/$defs/metrics"}
        },
        "$defs": {
            "positive": {"type": "number", "exclusiveMinimum": 0},
            "camera": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "uri"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "Unique camera id, used in metrics labels and output records."},
                    "uri": {"type": "string", "description": "rtsp://host/path, file:///abs/path, a file path relative to the pipeline file, or test:PATTERN (a GStreamer videotestsrc pattern such as test:ball)."},
                    "sampling": {
                        "type": "object",
                        "additionalProperties": false,
                        "description": "How many frames to analyse: exactly one of fps and every_seconds. Absent: every decoded frame.",
                        "properties": {
                            "fps": {"$ref": "#/$defs/positive", "description": "Frames per second to keep."},
                            "every_seconds": {"$ref": "#/$defs/positive", "description": "Seconds between kept frames."}
                        },
                        "oneOf": [{"required": ["fps"]}, {"required": ["every_seconds"]}]
                    },
                    "width": {"type": "integer", "minimum": 1, "description": "Width to scale frames to; give height too."},
                    "height": {"type": "integer", "minimum": 1, "description": "Height to scale frames to; give width too."},
                    "rtsp": {
                        "type": "object",
                        "additionalProperties": false,
                        "description": "RTSP transport options (rtsp:// URIs only).",
                        "properties": {
                            "transport": {"enum": ["tcp", "udp"], "default": "tcp"},
                            "latency_ms": {"type": "integer", "minimum": 0, "default": 200, "description": "Jitter-buffer latency in milliseconds."}
                        }
                    },
                    "on_end": {"enum": ["stop", "loop"], "default": "stop", "description": "What a file source does at its end."},
                    "queue": {"type": "integer", "minimum": 1, "default": 4, "description": "Frames buffered between the camera and the engine; the oldest is dropped when full."}
                }
            },
            "model": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "path", "adapter", "head"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "Unique model id."},
                    "path": {"type": "string", "description": "ONNX file, relative to the pipeline file."},
                    "adapter": {"enum": adapters, "description": "Model family: fixes pre- and post-processing."},
                    "head": {"$ref": "#/$defs/head"},
                    "crops_from": {"type": "string", "description": "Id of a detector model whose boxes this model runs on."},
                    "oracle": {"type": "string", "description": "An oracle link file (from `mlink adapt`) applied to the model's exact output."},
                    "view": {
                        "type": "object",
                        "additionalProperties": false,
                        "description": "The link view: a fixed-length encoding of the raw output that links take as input; absent fields take the family's default.",
                        "properties": {
                            "classes": {"type": "array", "items": {"type": "string"}, "description": "Detectors: classes or groups counted at every threshold."},
                            "thresholds": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "description": "Detectors: ascending score thresholds."},
                            "score_bins": {"type": "integer", "minimum": 0, "maximum": 16},
                            "grid": {"type": "integer", "minimum": 0, "maximum": 16},
                            "size_bins": {"type": "integer", "minimum": 0, "maximum": 16},
                            "keypoints": {"type": "boolean"},
                            "class_indices": {"type": "array", "items": {"type": "integer", "minimum": 0}, "description": "Classifiers: class probabilities kept (then the rest's mass)."}
                        }
                    },
                    "cost": {
                        "description": "`auto` to profile at start-up, or the declared cost.",
                        "default": "auto",
                        "oneOf": [
                            {"const": "auto"},
                            {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["memory_mb", "latency_ms"],
                                "properties": {
                                    "memory_mb": {"$ref": "#/$defs/positive", "description": "Memory the loaded model takes, in MB."},
                                    "latency_ms": {"$ref": "#/$defs/positive", "description": "Latency of one inference, in milliseconds."}
                                }
                            }
                        ]
                    },
                    "min_score": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3, "description": "Minimum detection score kept by detector adapters."},
                    "threads": {"type": "integer", "minimum": 1, "default": 1, "description": "ONNX Runtime intra-op threads."}
                }
            },
            "head": {
                "type": "object",
                "description": "What the application consumes from the model; `kind` picks the other fields.",
                "required": ["kind"],
                "properties": {"kind": {"enum": HeadKind::ALL.iter().map(|h| h.name()).collect::<Vec<_>>()}},
                "oneOf": HeadKind::ALL.iter().map(|&k| head_variant(k, &class_names)).collect::<Vec<_>>()
            },
            "links": {
                "type": "object",
                "additionalProperties": false,
                "description": "How model links are obtained: trained from profiled samples or loaded from a bundle.",
                "properties": {
                    "bundle": {"type": "string", "description": "Link bundle to load (from mlink train), relative to the pipeline file."},
                    "hidden_factor": {"type": "integer", "minimum": 1, "default": 2},
                    "epochs": {"type": "integer", "minimum": 1, "default": 100},
                    "batch_size": {"type": "integer", "minimum": 1, "default": 32},
                    "learning_rate": {"$ref": "#/$defs/positive", "default": 0.01},
                    "validation_split": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.2},
                    "warmup_samples": {"type": "integer", "minimum": 0, "default": 200},
                    "seed": {"type": "integer", "minimum": 0, "default": 0}
                }
            },
            "scheduler": {
                "type": "object",
                "additionalProperties": false,
                "required": ["budget"],
                "properties": {
                    "budget": {
                        "type": "object",
                        "additionalProperties": false,
                        "minProperties": 1,
                        "description": "Resources the executed models may use: at least one.",
                        "properties": {
                            "memory_mb": {"$ref": "#/$defs/positive", "description": "Memory budget in MB."},
                            "ms_per_frame": {"$ref": "#/$defs/positive", "description": "Inference time budget per frame, in ms."}
                        }
                    },
                    "period_s": {"$ref": "#/$defs/positive", "default": 3600.0, "description": "Seconds between re-selections."},
                    "profiling_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.01, "description": "Share of frames on which every model runs to profile the links."},
                    "policy": {"enum": ["mlink", "gain", "optimal", "standalone", "hybrid"], "default": "mlink"},
                    "drift_margin": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "description": "Re-select early when profiled accuracy drops by more than this."},
                    "latency_allowance_s": {"type": "number", "minimum": 0, "default": 10.0, "description": "Policy hybrid: video seconds a triggered frame may wait for a model that runs in turns."},
                    "load_ms_per_mb": {"type": "number", "minimum": 0, "default": 5.0, "description": "Policy hybrid: load and unload time charged per MB of a model run in turns."},
                    "max_output_age_s": {"type": "number", "exclusiveMinimum": 0, "default": 10.0, "description": "Policy hybrid: video seconds a triggered model's last exact output is served at most before the model runs again (.inf in YAML: never)."}
                }
            },
            "adaptation": {
                "type": "object",
                "additionalProperties": false,
                "description": "Online adaptation of the links.",
                "properties": {
                    "policy": {"enum": ["none", "periodic", "uncertainty", "loss_prediction"], "default": "none"},
                    "uncertainty_threshold": {"$ref": "#/$defs/positive", "description": "Required by policy `uncertainty`."},
                    "aggregator": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["url", "token_env", "edge_id"],
                        "properties": {
                            "url": {"type": "string", "pattern": "^https?://"},
                            "token_env": {"type": "string", "minLength": 1},
                            "edge_id": {"type": "string", "minLength": 1}
                        }
                    }
                }
            },
            "sink": {
                "type": "object",
                "required": ["kind"],
                "oneOf": [
                    {
                        "additionalProperties": false,
                        "required": ["kind", "path"],
                        "properties": {
                            "kind": {"const": "jsonl"},
                            "path": {"type": "string", "description": "File to append records to, relative to the pipeline file."},
                            "rotate_mb": {"$ref": "#/$defs/positive", "default": 64.0}
                        }
                    },
                    {
                        "additionalProperties": false,
                        "properties": {"kind": {"const": "stdout"}}
                    },
                    {
                        "additionalProperties": false,
                        "required": ["kind", "host"],
                        "properties": {
                            "kind": {"const": "mqtt"},
                            "host": {"type": "string", "minLength": 1},
                            "port": {"type": "integer", "minimum": 0, "maximum": 65535, "default": 1883},
                            "topic_prefix": {"type": "string", "default": "mlink"},
                            "buffer": {"type": "integer", "minimum": 1, "default": 10000}
                        }
                    }
                ]
            },
            "metrics": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "listen": {"type": ["string", "null"], "default": "127.0.0.1:9464", "description": "IP:PORT to serve /metrics, the status page and the /api/v1 API on; null disables it."},
                    "api_token_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "Environment variable holding the bearer token of the camera API's mutating calls; absent: they are refused."}
                }
            }
        }
    })
}

fn head_variant(kind: HeadKind, class_names: &[&str]) -> Value {
    let mut props = serde_json::Map::new();
    props.insert("kind".into(), json!({"const": kind.name()}));
    let mut required = vec!["kind"];
    for &f in kind.fields() {
        let schema = match f {
            "classes" => {
                json!({"type": "array", "items": {"enum": class_names}, "description": "COCO-80 class names or the groups `vehicle` and `object` (every class but person); `face` or `person` for one-class models, which may leave it out."})
            }
            "groups" => {
                json!({"type": "array", "description": "Named groups of class indices; the classes no group lists form `other`.", "items": {"type": "object", "additionalProperties": false, "required": ["name", "classes"], "properties": {"name": {"type": "string", "minLength": 1}, "classes": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}}}})
            }
            _ => json!({"type": "integer", "minimum": 1}),
        };
        props.insert(f.into(), schema);
        if f != "classes" && f != "groups" {
            required.push(f);
        }
    }
    json!({"additionalProperties": false, "required": required, "properties": props})
}
