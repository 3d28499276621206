//! The formats of one plan: the plan's own and those a recipe gives single linears or experts blocks
//! (`MIXED_PRECISION`), each made once and looked up by name.

use crate::formats::{self, FormatName, Fp8Bf16Scales, Fp8Granularity, Nvfp4CompressedTensors, QuantFormat};

use super::plan::{ExpertPlan, ExportPlan, LinearPlan};
use super::Encoding;

pub struct FormatSet {
    /// One per [`FormatName::ALL`], in that order.
    all: Vec<Box<dyn QuantFormat>>,
    /// The formats the plan uses.
    used: Vec<FormatName>,
    default: FormatName,
}

impl FormatSet {
    /// The formats of `plan`, with torch's CUDA arithmetic where `torch_cuda` (see [`formats::format`]). A plan
    /// written in compressed-tensors' form quantizes as compressed-tensors does: FP8 with bf16 scales, NVFP4 with a
    /// bf16 global divisor.
    pub fn new(plan: &ExportPlan, torch_cuda: bool) -> Self {
        let make = |name: FormatName| -> Box<dyn QuantFormat> {
            let ct = plan.encoding == Encoding::CompressedTensors;
            if ct && matches!(name, FormatName::Nvfp4 | FormatName::W4a16Nvfp4) {
                return Box::new(Nvfp4CompressedTensors { weight_only: name == FormatName::W4a16Nvfp4 });
            }
            let granularity = match name {
                FormatName::Fp8 => Some(Fp8Granularity::Tensor),
                FormatName::Fp8PcPt => Some(Fp8Granularity::Channel),
                FormatName::Fp8PbWo => Some(Fp8Granularity::Block),
                _ => None,
            };
            match granularity {
                Some(granularity) if ct => Box::new(Fp8Bf16Scales { granularity }),
                _ => formats::format(name, torch_cuda),
            }
        };
        FormatSet {
            all: FormatName::ALL.iter().map(|&name| make(name)).collect(),
            used: plan.formats_used(),
            default: plan.format,
        }
    }

    pub fn get(&self, name: FormatName) -> &dyn QuantFormat {
        let index = FormatName::ALL.iter().position(|&n| n == name).unwrap_or(0);
        self.all[index].as_ref()
    }

    /// The format of a linear.
    pub fn linear(&self, linear: &LinearPlan) -> &dyn QuantFormat {
        self.get(linear.format.unwrap_or(self.default))
    }

    /// The format of a layer's routed experts.
    pub fn experts(&self, experts: &ExpertPlan) -> &dyn QuantFormat {
        self.get(experts.format.unwrap_or(self.default))
    }

    /// Whether any format the plan uses needs calibration (input scales, or an AWQ search, from the forward).
    pub fn calibrated(&self) -> bool {
        self.used.iter().any(|&name| self.get(name).calibrated() || self.get(name).awq().is_some())
    }

    /// The quantizer of the AWQ search the plan's AWQ format needs (None without one).
    pub fn awq(&self) -> Option<crate::formats::AwqQuantizer> {
        self.used.iter().find_map(|&name| self.get(name).awq())
    }

    /// The formats the plan uses, by name, for messages.
    pub fn names(&self) -> String {
        self.used.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", ")
    }
}
