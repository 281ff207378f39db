//! Training a bundle: every link and ensemble from aligned samples, and fine-tuning on new
//! samples (online adaptation).

use super::{Link, LinkBundle, TargetEnsemble, TrainingMeta, check_model_count};
use crate::link::LinkError;
use crate::link::ensemble::Ensemble;
use crate::link::net::{Arch, LinkNet, TrainParams};
use crate::link::sample::{Sample, check_samples, pairs_of};
use crate::link::trace::{TraceHeader, TraceRecord};
use crate::link::view_links::{ModelInput, ViewLinks};
use crate::output::{OutputForm, OutputSpec, OutputValue, try_mean_score};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many of `n` samples (in time order) the last, held-out block has.
fn held_out_len(n: usize, validation_split: f64) -> usize {
    let share = if validation_split.is_finite() {
        validation_split.clamp(0.0, 0.9)
    } else {
        0.0
    };
    (((n as f64) * share).round() as usize).min(n)
}

/// Splits the indices of `n` samples in time order into training and validation: the last
/// block in time is held out. Neighbouring frames are nearly identical, so a random split puts
/// copies of validation frames in the training set and makes link scores optimistic; the
/// last block measures how the links do on frames they have not seen, as serving does.
fn split(n: usize, validation_split: f64) -> (Vec<usize>, Vec<usize>) {
    let n_train = n - held_out_len(n, validation_split);
    ((0..n_train).collect(), (n_train..n).collect())
}

/// Runs `f` over `0..n` on `threads` worker threads (a shared counter hands out the work).
fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    if let Ok(mut g) = results.lock() {
                        g[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is processed"))
        .collect()
}

impl LinkBundle {
    /// Trains every link and ensemble from aligned samples in time order (`samples[n][m]`:
    /// model m's output on frame n, or None); the last `validation_split` of them is held out
    /// to score the links and ensembles. `threads` workers train links in parallel; `progress`
    /// is called with a short description after each finished link or ensemble.
    pub fn train(
        models: &[(String, OutputSpec)],
        samples: &[Sample],
        params: &TrainParams,
        validation_split: f64,
        threads: usize,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, LinkError> {
        let k = models.len();
        check_model_count(k)?;
        check_samples(models.iter().map(|(id, spec)| (id.as_str(), spec)), samples)?;
        let (train_idx, val_idx) = split(samples.len(), validation_split);
        let pairs: Vec<(usize, usize)> = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect();
        let trained = parallel(pairs.len(), threads, |p| {
            let (i, j) = pairs[p];
            let r = train_link(models, samples, &train_idx, &val_idx, i, j, params);
            progress(&format!("link {} -> {}", models[i].0, models[j].0));
            r
        });
        let mut links: Vec<Option<Link>> = (0..k * k).map(|_| None).collect();
        for r in trained {
            let l = r?;
            let at = l.source * k + l.target;
            links[at] = Some(l);
        }
        let mut bundle = LinkBundle {
            models: models
                .iter()
                .map(|(id, spec)| super::BundleModel {
                    id: id.clone(),
                    spec: spec.clone(),
                })
                .collect(),
            links,
            ensembles: Vec::new(),
            meta: TrainingMeta {
                params: params.clone(),
                validation_split,
                train_samples: train_idx.len(),
                validation_samples: val_idx.len(),
                trained_unix_s: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                source: String::new(),
            },
            view_links: None,
            cache: Mutex::new(HashMap::new()),
        };
        let ens = parallel(k, threads, |j| {
            let r = bundle.train_ensemble(j, samples, &train_idx, &val_idx);
            progress(&format!("ensemble -> {}", models[j].0));
            r
        });
        bundle.ensembles = ens.into_iter().collect::<Result<_, _>>()?;
        Ok(bundle)
    }

    /// Trains from trace records (the header's models, in order; the records in time order):
    /// the paper's links and ensembles from every record, and, where the trace records link
    /// views (format 2), the few-sample links over them ([`ViewLinks`]) from the records in
    /// which every model ran with its view.
    pub fn train_from_trace(
        header: &TraceHeader,
        records: &[TraceRecord],
        params: &TrainParams,
        validation_split: f64,
        threads: usize,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, LinkError> {
        let models: Vec<(String, OutputSpec)> = header
            .models
            .iter()
            .map(|m| (m.id.clone(), m.spec.clone()))
            .collect();
        let mut ordered: Vec<&TraceRecord> = records.iter().collect();
        // Stable: records of one time keep their order (several cameras).
        ordered.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
        let samples: Vec<Sample> = ordered
            .iter()
            .map(|r| Sample::new(r.outputs.clone()))
            .collect();
        let mut b = Self::train(
            &models,
            &samples,
            params,
            validation_split,
            threads,
            progress,
        )?;
        b.meta.source = header.source.clone();
        progress("view links");
        b.train_view_links(view_inputs(&ordered, models.len()), params);
        Ok(b)
    }

    /// Trains the few-sample links over the link views on `frames` (time order,
    /// `frames[f][m]`: model m's inputs), replacing the ones held. A frame without every
    /// model, or where a model's view is not as long as on the first frame (a pipeline
    /// edited while recording), is left out; fewer than [`MIN_VIEW_FRAMES`] frames, or a
    /// token-sequence head, leave the bundle without view links.
    pub fn train_view_links(&mut self, frames: Vec<Vec<ModelInput<'_>>>, params: &TrainParams) {
        let specs: Vec<OutputSpec> = self.models.iter().map(|m| m.spec.clone()).collect();
        let first: Vec<usize> = frames
            .iter()
            .find(|f| f.len() == specs.len())
            .map(|f| f.iter().map(|m| m.view.len()).collect())
            .unwrap_or_default();
        let frames: Vec<Vec<ModelInput<'_>>> = frames
            .into_iter()
            .filter(|f| {
                f.len() == specs.len() && f.iter().zip(&first).all(|(m, &d)| m.view.len() == d)
            })
            .collect();
        self.view_links = (frames.len() >= MIN_VIEW_FRAMES && ViewLinks::supports(&specs))
            .then(|| ViewLinks::train(&specs, &frames, params));
        self.clear_cache();
    }

    /// Online: trains the view links again on `frames` (time order: the samples online
    /// training keeps, then the newest batch) where that does not mean fewer frames than the
    /// links held were trained on; returns the frames they now learned from, or None when the
    /// links held stay (no view links, or too few frames with every model's view at the
    /// length the links read). For a bundle from a file that does not say how many frames its
    /// view links learned from, its training samples count.
    pub fn retrain_view_links(
        &mut self,
        frames: Vec<Vec<ModelInput<'_>>>,
        params: &TrainParams,
    ) -> Option<usize> {
        let held = self.view_links.as_ref()?;
        let before = held
            .trained_frames()
            .unwrap_or(self.meta.train_samples + self.meta.validation_samples);
        let links = held.retrained(frames, params, before)?;
        let n = links.trained_frames();
        self.view_links = Some(links);
        self.clear_cache();
        n
    }

    /// Fits the ensemble of target j on the training samples and scores its source subsets on
    /// the validation samples.
    fn train_ensemble(
        &self,
        j: usize,
        samples: &[Sample],
        train_idx: &[usize],
        val_idx: &[usize],
    ) -> Result<TargetEnsemble, LinkError> {
        let train: Vec<&Sample> = train_idx.iter().map(|&n| &samples[n]).collect();
        let k = self.models.len();
        let dim = match self.models[j].spec.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { .. } => 0,
        };
        let start = Ensemble::new(j, (0..k).filter(|&i| i != j).collect(), dim);
        let mut te = TargetEnsemble {
            ensemble: self.fit_ensemble(start, &train)?,
            subset_scores: BTreeMap::new(),
        };
        let validation: Vec<&Sample> = val_idx.iter().map(|&n| &samples[n]).collect();
        te.subset_scores = self.subset_scores(&te, j, &validation)?;
        Ok(te)
    }

    /// Fits the weights of an ensemble, from `ensemble`'s, over the current links on the
    /// samples where its target and at least two of its sources are present (weights without
    /// such samples stay as they are).
    fn fit_ensemble(
        &self,
        mut ensemble: Ensemble,
        train: &[&Sample],
    ) -> Result<Ensemble, LinkError> {
        let j = ensemble.target;
        let spec = &self.models[j].spec;
        let sources = ensemble.sources.clone();
        if ensemble.logit_weights.first().is_none_or(Vec::is_empty) {
            return Ok(ensemble);
        }
        let mut data = Vec::new();
        for s in train {
            let Some(OutputValue::Vector(t)) = s.output(j) else {
                continue;
            };
            let parts = sources
                .iter()
                .map(|&i| match s.output(i) {
                    Some(v) => self.link(i, j).map(|l| l.net.logits(v)).transpose(),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if parts.iter().filter(|p| p.is_some()).count() >= 2 {
                data.push((parts, t.clone()));
            }
        }
        let p = &self.meta.params;
        let mut rng = StdRng::seed_from_u64(p.seed ^ (0xe5e0 + j as u64));
        ensemble.fit(
            spec.task,
            &data,
            p.epochs,
            p.batch_size,
            p.learning_rate as f32,
            &mut rng,
        );
        Ok(ensemble)
    }

    /// Continues training every link on new aligned samples for `epochs` epochs (online
    /// adaptation), and retrains the loss heads of the links it changed. Scores are left as
    /// they are; [`fine_tune_and_rescore`](Self::fine_tune_and_rescore) refreshes them.
    pub fn fine_tune(&mut self, samples: &[Sample], epochs: usize) -> Result<(), LinkError> {
        self.check_samples(samples)?;
        let k = self.models.len();
        let mut p = self.meta.params.clone();
        p.epochs = epochs;
        for (at, slot) in self.links.iter_mut().enumerate() {
            let Some(l) = slot else { continue };
            let (i, j) = (at / k, at % k);
            let (x, t) = pairs_of(samples, i, j);
            if x.is_empty() {
                continue;
            }
            let mut rng = StdRng::seed_from_u64(p.seed ^ at as u64 ^ 0xf1e7);
            l.net.fit(&x, &t, &p, &mut rng)?;
            if l.loss_head.is_some() {
                l.loss_head = l.net.fit_loss_head(&x, &t, &p, &mut rng)?;
            }
        }
        self.clear_cache();
        Ok(())
    }

    /// Splits samples in time order as training does: the samples to fit on and the last
    /// block, held out to score on (the share of the bundle's validation split).
    pub fn split_in_time<'a>(&self, samples: &'a [Sample]) -> (&'a [Sample], &'a [Sample]) {
        let n_train = samples.len() - held_out_len(samples.len(), self.meta.validation_split);
        samples.split_at(n_train)
    }

    /// Refits what was fitted on top of the links after they changed (online fine-tuning,
    /// federated rounds): every ensemble's weights on `train`, then the link scores p(g_ij)
    /// and the ensembles' subset scores (the priors the scheduler starts from) on the held-out
    /// `validation` samples. Links and subsets without validation samples keep their scores.
    /// Takes as long as the ensemble part of training; run it off the frame path.
    pub fn refit(&mut self, train: &[Sample], validation: &[Sample]) -> Result<(), LinkError> {
        self.check_samples(train)?;
        self.check_samples(validation)?;
        let train: Vec<&Sample> = train.iter().collect();
        let mut fresh = Vec::with_capacity(self.ensembles.len());
        for te in &self.ensembles {
            fresh.push(self.fit_ensemble(te.ensemble.clone(), &train)?);
        }
        for (te, ensemble) in self.ensembles.iter_mut().zip(fresh) {
            te.ensemble = ensemble;
        }
        // Subsets without validation samples keep their earlier score, the best estimate
        // there is.
        self.rescore(validation)
    }

    /// [`fine_tune`](Self::fine_tune) on `train`, then refreshes the validation scores on the
    /// held-out `validation` samples: each link's p(g_ij) (links without validation pairs keep
    /// theirs) and every ensemble's subset scores, so the scheduler sees the adapted links.
    pub fn fine_tune_and_rescore(
        &mut self,
        train: &[Sample],
        validation: &[Sample],
        epochs: usize,
    ) -> Result<(), LinkError> {
        self.check_samples(validation)?;
        self.fine_tune(train, epochs)?;
        self.rescore(validation)
    }
}

/// The fewest frames with every model's view that view links are trained on: fewer leave
/// no block to choose learners on.
pub const MIN_VIEW_FRAMES: usize = crate::link::view_links::MIN_FRAMES;

/// Each record's inputs for view links (time order), where every model ran with a vector
/// head and a view (format 1 records hold no views, and give none).
fn view_inputs<'a>(records: &[&'a TraceRecord], k: usize) -> Vec<Vec<ModelInput<'a>>> {
    records
        .iter()
        .filter_map(|r| {
            (0..k)
                .map(|m| match (r.outputs.get(m)?, r.views.get(m)?) {
                    (Some(OutputValue::Vector(head)), Some(view)) => Some(ModelInput {
                        view: view.as_slice(),
                        head: head.as_slice(),
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect()
}

/// Trains link i -> j on the training samples where both models ran and scores it on the
/// validation samples where both ran.
fn train_link(
    models: &[(String, OutputSpec)],
    samples: &[Sample],
    train_idx: &[usize],
    val_idx: &[usize],
    i: usize,
    j: usize,
    p: &TrainParams,
) -> Result<Link, LinkError> {
    let (x, t) = pairs_of(train_idx.iter().map(|&n| &samples[n]), i, j);
    let (vx, vt) = pairs_of(val_idx.iter().map(|&n| &samples[n]), i, j);
    let mut rng = StdRng::seed_from_u64(
        p.seed ^ ((i as u64) << 32 | j as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let (src, dst) = (&models[i].1, &models[j].1);
    let mut net = LinkNet::new(src, dst, p, &x, &t, &mut rng)?;
    net.fit(&x, &t, p, &mut rng)?;
    let loss_head = net.fit_loss_head(&x, &t, p, &mut rng)?;
    let score = try_mean_score(
        dst,
        vx.iter()
            .zip(&vt)
            .map(|(a, b)| Ok::<_, LinkError>((net.predict(a)?, *b))),
    )?
    .map(|m| m.score);
    Ok(Link {
        source: i,
        target: j,
        arch: Arch::of(src, dst),
        net,
        score,
        train_pairs: x.len(),
        validation_pairs: vx.len(),
        loss_head,
    })
}
