//! The Slurm SPANK plugin behind `srun --gkfs`.
//!
//! **Not implemented yet** (tracked by the Slurm integration issue): this crate is an
//! empty placeholder so the workspace has the layout of DESIGN.md. It builds no plugin
//! and registers no option.
