//! JUnit XML for the test matrix: written by `test-matrix --junit FILE` for CI systems that
//! show JUnit. `merge` reads the JSON results (results.rs); it still reads this XML, the subset
//! this xtask writes, so that results files from older runs can be merged.

use super::results::{Case, Status, Suite};
use std::fmt::Write as _;

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters; a guest's serial log may contain them.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

pub fn write(suite: &Suite) -> String {
    let count = |st: Status| suite.cases.iter().filter(|c| c.status == st).count();
    let total: f64 = suite.cases.iter().map(|c| c.secs).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"fugu test-matrix\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        suite.cases.len(),
        count(Status::Fail),
        count(Status::Skip)
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"fugu-matrix\" hostname=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{total:.3}\">",
        escape(&suite.host),
        suite.cases.len(),
        count(Status::Fail),
        count(Status::Skip)
    );
    let _ = writeln!(
        s,
        "    <properties><property name=\"host.classes\" value=\"{}\"/></properties>",
        escape(&suite.classes)
    );
    for c in &suite.cases {
        let class = c.id.split('/').take(2).collect::<Vec<_>>().join(".");
        let _ = write!(
            s,
            "    <testcase classname=\"fugu.matrix.{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&class),
            escape(&c.id),
            c.secs
        );
        match c.status {
            Status::Pass => s.push_str("/>\n"),
            Status::Skip => {
                let _ = writeln!(
                    s,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(&c.message)
                );
            }
            Status::Fail => {
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(&c.message),
                    escape(&c.detail)
                );
            }
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// The value of `name="..."` in a start tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Read back what `write` produced (and plain JUnit of the same shape).
pub fn parse(text: &str) -> Result<Vec<Suite>, String> {
    let mut suites = Vec::new();
    let mut rest = text;
    if !text.contains("<testsuite") {
        return Err("no <testsuite> element: not a JUnit file".into());
    }
    while let Some(pos) = rest.find("<testsuite ") {
        rest = &rest[pos..];
        let tag_end = rest.find('>').ok_or("unterminated <testsuite> tag")?;
        let tag = &rest[..tag_end];
        let end = rest.find("</testsuite>").unwrap_or(rest.len());
        let body = &rest[tag_end..end];
        let mut suite = Suite {
            host: attr(tag, "hostname").unwrap_or_else(|| "unknown host".into()),
            classes: String::new(),
            cases: Vec::new(),
        };
        if let Some(p) = body.find("name=\"host.classes\"") {
            let ptag = &body[p.saturating_sub(1)..];
            let ptag = &ptag[..ptag.find('>').unwrap_or(ptag.len())];
            suite.classes = attr(ptag, "value").unwrap_or_default();
        }
        let mut b = body;
        while let Some(p) = b.find("<testcase ") {
            b = &b[p..];
            let tend = b.find('>').ok_or("unterminated <testcase> tag")?;
            let tag = &b[..tend];
            let id = attr(tag, "name").ok_or("a <testcase> without a name")?;
            let secs = attr(tag, "time")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.0);
            let (inner, next) = if tag.ends_with('/') {
                ("", &b[tend + 1..])
            } else {
                let close = b
                    .find("</testcase>")
                    .ok_or_else(|| format!("testcase {id} is not closed"))?;
                (&b[tend + 1..close], &b[close..])
            };
            let (status, message, detail) = if let Some(q) = inner.find("<failure") {
                let f = &inner[q..];
                let fend = f.find('>').unwrap_or(f.len());
                let detail = f[fend.min(f.len())..]
                    .trim_start_matches('>')
                    .split("</failure>")
                    .next()
                    .unwrap_or("");
                (
                    Status::Fail,
                    attr(&f[..fend], "message").unwrap_or_default(),
                    unescape(detail),
                )
            } else if inner.contains("<error") {
                (Status::Fail, "error".to_string(), String::new())
            } else if let Some(q) = inner.find("<skipped") {
                let f = &inner[q..];
                let fend = f.find('>').unwrap_or(f.len());
                (
                    Status::Skip,
                    attr(&f[..fend], "message").unwrap_or_default(),
                    String::new(),
                )
            } else {
                (Status::Pass, String::new(), String::new())
            };
            suite.cases.push(Case {
                id,
                status,
                message,
                detail,
                secs,
            });
            b = next;
        }
        suites.push(suite);
        rest = &rest[end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status_with_awkward_text() {
        let suite = Suite {
            host: "box <1>".into(),
            classes: "emulated".into(),
            cases: vec![
                Case {
                    id: "pvm/shadow/x86_64/i386/tiny-direct/boot".into(),
                    status: Status::Pass,
                    message: String::new(),
                    detail: String::new(),
                    secs: 1.5,
                },
                Case {
                    id: "vmx/tdp/i686/amd64/bios-disk/virtio-disk".into(),
                    status: Status::Skip,
                    message: "needs VMX; host has \"none\" & more".into(),
                    detail: String::new(),
                    secs: 0.0,
                },
                Case {
                    id: "pvm/shadow/i686/amd64/tiny-direct/boot".into(),
                    status: Status::Fail,
                    message: "timed out after 60 s".into(),
                    detail: "line <a>\nline 'b'\n".into(),
                    secs: 60.0,
                },
            ],
        };
        let xml = write(&suite);
        assert!(xml.contains("failures=\"1\"") && xml.contains("skipped=\"1\""));
        let back = parse(&xml).unwrap();
        assert_eq!(back, vec![suite]);
    }

    #[test]
    fn control_characters_do_not_break_the_xml() {
        assert_eq!(escape("a\u{1b}[0m\tb"), "a\\x1b[0m\tb");
    }

    #[test]
    fn rejects_what_is_not_junit() {
        assert!(parse("hello").is_err());
        assert!(parse("<testsuite name=\"x\"><testcase time=\"1\"/></testsuite>").is_err());
    }
}
