//! [`ByClass`]: one value per hazard class, looked up by class.
//!
//! Per-class settings, rules and series live here instead of in vectors zipped with
//! [`HazardClass::ALL`], so a value cannot be paired with the wrong class and a new class is a
//! new slot everywhere at once.

use std::ops::{Index, IndexMut};

use serde::{Serialize, Serializer};

use super::HazardClass;

/// One `T` per hazard class, in [`HazardClass::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByClass<T>([T; HazardClass::COUNT]);

impl<T> ByClass<T> {
    /// Each class's value, from `value(class)`.
    pub fn from_fn(mut value: impl FnMut(HazardClass) -> T) -> Self {
        ByClass(std::array::from_fn(|i| value(HazardClass::ALL[i])))
    }

    /// The same value for every class.
    pub fn splat(value: T) -> Self
    where
        T: Clone,
    {
        ByClass::from_fn(|_| value.clone())
    }

    /// Each class with its value, in [`HazardClass::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (HazardClass, &T)> {
        HazardClass::ALL.into_iter().zip(self.0.iter())
    }

    /// Each class with its value, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (HazardClass, &mut T)> {
        HazardClass::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// The values alone, in [`HazardClass::ALL`] order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// A value per class computed from this one's.
    pub fn map<U>(&self, mut f: impl FnMut(HazardClass, &T) -> U) -> ByClass<U> {
        ByClass::from_fn(|class| f(class, &self[class]))
    }
}

impl<T> Index<HazardClass> for ByClass<T> {
    type Output = T;

    fn index(&self, class: HazardClass) -> &T {
        &self.0[class.index()]
    }
}

impl<T> IndexMut<HazardClass> for ByClass<T> {
    fn index_mut(&mut self, class: HazardClass) -> &mut T {
        &mut self.0[class.index()]
    }
}

impl<'a, T> IntoIterator for &'a ByClass<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    /// The values alone, as [`ByClass::values`].
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// As a sequence in [`HazardClass::ALL`] order (what the series' JSON has always been).
impl<T: Serialize> Serialize for ByClass<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_finds_its_own_value() {
        let names = ByClass::from_fn(HazardClass::name);
        for class in HazardClass::ALL {
            assert_eq!(names[class], class.name());
        }
        let pairs: Vec<_> = names.iter().map(|(c, n)| (c, *n)).collect();
        assert_eq!(
            pairs,
            HazardClass::ALL.map(|c| (c, c.name())).to_vec(),
            "iteration follows HazardClass::ALL"
        );
        let mut counts = ByClass::splat(0);
        counts[HazardClass::Disengagement] += 2;
        assert_eq!(counts[HazardClass::Critical], 0);
        assert_eq!(counts.map(|_, n| n * 10)[HazardClass::Disengagement], 20);
    }

    #[test]
    fn every_class_has_its_index() {
        for (i, class) in HazardClass::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
