//! The compact text in which a snapshot keeps the strings it holds once per
//! address: a handle id and an allocation's labels, one after another in
//! one shared `Arc<str>`.
//!
//! Why: a filled pool holds a million allocations, most with their own
//! handle and three short labels (namespace, node, pod). As separate
//! `String`s in vectors they took about 600 bytes per address in a dozen
//! heap blocks; as one text they take one heap block of about 90 bytes, and
//! the handle index shares that block for the handle's id instead of a copy
//! (see [`crate::handle::HandleName`]).
//!
//! Each string is a field `<length in bytes, decimal>:<bytes>` (a
//! netstring without its trailing comma), so any string can be held and
//! reading one back costs a few digits; the text stays valid UTF-8, so no
//! unchecked conversion is needed. A label key that Calico writes on every
//! allocation is one letter instead (letters never start a field).

/// Label keys written as one letter, indexed by letter from `a`: the keys
/// calico-ipam and the node agent put on allocations
/// (cni-plugin/pkg/ipamplugin/ipam_plugin.go, node/pkg/allocateip).
const SHORT_KEYS: [&str; 5] = ["namespace", "node", "pod", "timestamp", "type"];

/// Appends `field` as `<length>:<field>`.
pub(crate) fn push_field(out: &mut String, field: &str) {
    let mut digits = [0u8; 20];
    let mut n = field.len();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
    out.push(':');
    out.push_str(field);
}

/// Splits the field at the start of `text` from what follows it; `None`
/// when `text` does not start with a field.
pub(crate) fn split_field(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut len = 0usize;
    let mut at = 0;
    while let Some(&b) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
        len = len.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
        at += 1;
    }
    if at == 0 || bytes.get(at) != Some(&b':') {
        return None;
    }
    let rest = &text[at + 1..];
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Appends a label key: one letter for a well-known key, else a field.
pub(crate) fn push_key(out: &mut String, key: &str) {
    match SHORT_KEYS.iter().position(|&k| k == key) {
        Some(i) => out.push(char::from(b'a' + i as u8)),
        None => push_field(out, key),
    }
}

/// Splits the label key at the start of `text` from what follows it.
pub(crate) fn split_key(text: &str) -> Option<(&str, &str)> {
    let first = *text.as_bytes().first()?;
    if first.is_ascii_lowercase() {
        let key = SHORT_KEYS.get(usize::from(first - b'a'))?;
        return Some((key, &text[1..]));
    }
    split_field(text)
}

/// Label pairs written one after another (key, then value as a field), as
/// [`push_key`] and [`push_field`] wrote them.
#[derive(Clone, Copy)]
pub(crate) struct Pairs<'a>(pub(crate) &'a str);

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, rest) = split_key(self.0)?;
        let (value, rest) = split_field(rest)?;
        self.0 = rest;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_keys_read_back_as_written() {
        let mut text = String::new();
        push_field(&mut text, "k8s-pod-network.abc");
        for (key, value) in [
            ("", ""),
            ("namespace", "default"),
            ("node", "n:1"),
            ("pod", "0123456789é"),
            ("zz", "x"),
        ] {
            push_key(&mut text, key);
            push_field(&mut text, value);
        }
        assert!(text.starts_with("19:k8s-pod-network.abc0:0:a7:default"));
        let (handle, rest) = split_field(&text).unwrap();
        assert_eq!(handle, "k8s-pod-network.abc");
        let pairs: Vec<_> = Pairs(rest).collect();
        assert_eq!(
            pairs,
            [
                ("", ""),
                ("namespace", "default"),
                ("node", "n:1"),
                ("pod", "0123456789é"),
                ("zz", "x")
            ]
        );
    }

    #[test]
    fn text_that_is_no_field_is_not_read_as_one() {
        for text in ["", ":x", "3x:abc", "5:abc", "99999999999999999999999:x"] {
            assert_eq!(split_field(text), None, "{text:?}");
        }
        assert_eq!(split_key("z"), None);
    }
}
