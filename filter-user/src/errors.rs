//! Errors as one line of text, for replies, logs and reports that carry an
//! error's causes in their own message.

/// `e` and its sources, joined by `": "`; a source whose text already ends
/// the line (a message that quotes its cause) is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}
