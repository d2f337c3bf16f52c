//! The key/value section: ordered as in the file, looked up by key.

use std::collections::HashMap;

use super::Value;

/// Metadata key → value, in file order. Keys are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets `key`; an existing key keeps its position. Returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, value) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(value)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer type whose value fits a u32.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }

    /// Any integer type whose value fits a u64.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer type whose value fits an i64.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An f32 or f64 value, as f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key)?.as_array()
    }

    /// An array whose items are all strings.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get_array(key)?.iter().map(Value::as_str).collect()
    }

    /// An array whose items are all f32 or f64.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get_array(key)?.iter().map(Value::as_f32).collect()
    }

    /// An array whose items are all integers that fit an i32.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_int().and_then(|i| i32::try_from(i).ok()))
            .collect()
    }

    /// An array whose items are all integers that fit a u32.
    pub fn get_u32_array(&self, key: &str) -> Option<Vec<u32>> {
        self.get_array(key)?.iter().map(Value::as_u32).collect()
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Metadata {
    /// Later duplicates replace earlier values in place.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_file_order_and_reindexes_on_remove() {
        let mut m: Metadata = [
            ("a", Value::U8(1)),
            ("b", Value::U32(2)),
            ("c", Value::from("x")),
        ]
        .into_iter()
        .collect();
        assert_eq!(m.insert("a", Value::U8(9)), Some(Value::U8(1)));
        assert_eq!(
            m.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.remove("b"), Some(Value::U32(2)));
        assert_eq!(m.get_str("c"), Some("x"));
        assert_eq!(m.get_u32("a"), Some(9));
        assert_eq!(m.get("b"), None);
    }

    #[test]
    fn typed_arrays() {
        let mut m = Metadata::new();
        m.insert("t", Value::strings(["a", "b"]));
        m.insert("s", Value::f32s([1.0, 2.0]));
        assert_eq!(m.get_str_array("t"), Some(vec!["a", "b"]));
        assert_eq!(m.get_f32_array("s"), Some(vec![1.0, 2.0]));
        assert_eq!(m.get_str_array("s"), None);
        assert_eq!(m.get_i32_array("t"), None);
    }
}
