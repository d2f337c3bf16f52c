//! The GGUF file as a [`ModelSource`]: where the config reads its keys and shapes.

use strata_kernels_cpu::GgmlType;

use crate::config::{blocks_in, ModelSource};
use crate::gguf::GgufFile;

impl ModelSource for GgufFile {
    fn meta_str(&self, key: &str) -> Option<String> {
        self.metadata().get_str(key).map(str::to_owned)
    }

    fn meta_uint(&self, key: &str) -> Option<u64> {
        self.metadata().get_u64(key)
    }

    fn meta_f32(&self, key: &str) -> Option<f32> {
        self.metadata().get_f32(key)
    }

    fn meta_bool(&self, key: &str) -> Option<bool> {
        self.metadata().get_bool(key)
    }

    fn tensor_shape(&self, name: &str) -> Option<(GgmlType, Vec<u64>)> {
        self.tensor(name).map(|t| (t.ty, t.dims.clone()))
    }

    fn blocks_present(&self) -> usize {
        blocks_in(self.tensors().iter().map(|t| t.name.as_str()))
    }
}
