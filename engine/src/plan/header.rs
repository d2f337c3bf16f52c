//! A GGUF header read as a model source, for plans made from the header alone.

use strata_kernels_cpu::GgmlType;

use crate::config::{blocks_in, ModelSource};
use crate::gguf::{Metadata, TensorInfo};

/// A GGUF header seen through the config reader's [`ModelSource`].
pub(crate) struct HeaderSource<'a> {
    pub(crate) meta: &'a Metadata,
    pub(crate) infos: &'a [TensorInfo],
}

impl ModelSource for HeaderSource<'_> {
    fn meta_str(&self, key: &str) -> Option<String> {
        self.meta.get_str(key).map(str::to_string)
    }

    fn meta_uint(&self, key: &str) -> Option<u64> {
        self.meta.get(key).and_then(|v| v.as_u64())
    }

    fn meta_f32(&self, key: &str) -> Option<f32> {
        self.meta.get(key).and_then(|v| v.as_f32())
    }

    fn meta_bool(&self, key: &str) -> Option<bool> {
        self.meta.get(key).and_then(|v| v.as_bool())
    }

    fn tensor_shape(&self, name: &str) -> Option<(GgmlType, Vec<u64>)> {
        self.infos
            .iter()
            .find(|t| t.name == name)
            .map(|t| (t.ty, t.dims.clone()))
    }

    fn blocks_present(&self) -> usize {
        blocks_in(self.infos.iter().map(|t| t.name.as_str()))
    }
}
