//! Model selection under a budget (paper section 5): objective, activation probability,
//! greedy and exact selection, period and profiling plans.
