//! Placeholder, filled below.
pub(crate) struct Reader<'a> { b: &'a [u8] }
impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self { Self { b } }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n { return None; }
        let (h, t) = self.b.split_at(n); self.b = t; Some(h)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> { self.take(1).and_then(|s| s.first().copied()) }
    pub(crate) fn u16(&mut self) -> Option<u16> { Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?)) }
    pub(crate) fn u64(&mut self) -> Option<u64> { Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?)) }
    pub(crate) fn is_empty(&self) -> bool { self.b.is_empty() }
}
