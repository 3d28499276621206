//! The verbs, the top floor: each file is one operation the binding exposes, written over the floors below
//! (checkpoint, formats, model, calib, export). Nothing below imports from here.

pub mod calibrate;
pub mod compare;
pub mod inspect;
pub mod logits;
pub mod pipeline;
pub mod quantize;
