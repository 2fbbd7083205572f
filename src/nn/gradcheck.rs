//! Centered finite differences against the analytic gradients (being written).
