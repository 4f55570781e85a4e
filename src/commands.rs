//! The comment command parser: which lines of a pull request comment are commands to the bot.
//!
//! A command is a line that starts with `/name` in the comment's own prose. The comment is read as
//! Markdown (CommonMark, as the forges render it), so a command inside a fenced or indented code
//! block, inline code, a block quote (someone quoting an earlier `/approve`) or an HTML block is
//! not a command. A line such as `/usr/bin` is a path, not a command; `/approve please` is a
//! command with a stray argument and gets an error that says so.

use std::fmt;
use std::ops::Range;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// A command to the bot, as written in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Approve the release pull request at its current head commit.
    Approve,
    /// Take back one's own approval.
    ApproveCancel,
    /// Stop the release from merging until `/unhold`.
    Hold,
    Unhold,
    /// Try a failed step again.
    Retry,
    /// Abort the release: close the pull request, record it as aborted.
    Cancel,
    /// Open a pull request that restores what the merged release changed in this environment
    /// (`/rollback [reason]`).
    Rollback,
    Help,
}

impl Command {
    /// Every command, in the order `/help` lists them. The match in [`Command::usage`] is
    /// exhaustive, so a new command cannot be added without its help line.
    pub const ALL: [Command; 8] = [
        Command::Approve,
        Command::ApproveCancel,
        Command::Hold,
        Command::Unhold,
        Command::Retry,
        Command::Cancel,
        Command::Rollback,
        Command::Help,
    ];

    /// How it is written and what it does, for `/help`.
    pub fn usage(self) -> (&'static str, &'static str) {
        match self {
            Command::Approve => (
                "/approve",
                "approve this release at the current head commit (an approving review counts the same)",
            ),
            Command::ApproveCancel => ("/approve cancel", "take back your approval"),
            Command::Hold => (
                "/hold",
                "keep the release from merging, even when everything else is ready",
            ),
            Command::Unhold => ("/unhold", "lift a hold"),
            Command::Retry => ("/retry", "try the failed step of the release again"),
            Command::Cancel => (
                "/cancel",
                "abort the release: close this pull request and record it as aborted",
            ),
            Command::Rollback => (
                "/rollback [reason]",
                "on a merged release pull request: open a pull request that restores what this release changed in its environment",
            ),
            Command::Help => ("/help", "show this list"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.usage().0)
    }
}

/// A line that looked like a command but is not one the bot knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`/{name}` is not a command I know{}", suggestion(.name))]
    Unknown { name: String },
    #[error("`/{name}` takes no argument `{argument}`; write `{usage}`")]
    UnexpectedArgument {
        name: String,
        argument: String,
        usage: &'static str,
    },
}

fn suggestion(name: &str) -> String {
    // No command name is longer than 9 characters, and a distance is at least the difference in
    // length: a longer word is no typo of one (and is not worth a quadratic comparison).
    let best = Command::ALL
        .iter()
        .filter(|_| name.chars().count() <= 12)
        .map(|c| c.usage().0.trim_start_matches('/'))
        .map(|u| {
            (
                strsim::levenshtein(name, u.split(' ').next().unwrap_or(u)),
                u,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, usage)) if d <= 2 => format!("; did you mean `/{usage}`?"),
        _ => "; write `/help` for the list".to_string(),
    }
}

/// Every command line of `comment`, in order, each parsed or with the reason it is not a command.
pub fn parse_comment(comment: &str) -> Vec<Result<Command, CommandError>> {
    command_lines(comment).into_iter().map(|(c, _)| c).collect()
}

/// The reason given with the first `/rollback` of `comment` (the rest of its line), if any.
pub fn rollback_reason(comment: &str) -> Option<String> {
    command_lines(comment)
        .into_iter()
        .find(|(c, _)| *c == Ok(Command::Rollback))
        .map(|(_, rest)| rest)
        .filter(|r| !r.is_empty())
}

/// Every command line of `comment` with the text after the command's name.
fn command_lines(comment: &str) -> Vec<(Result<Command, CommandError>, String)> {
    // In document order and disjoint, so one pass over them keeps up with the lines.
    let ignored = ignored_ranges(comment);
    let mut next_ignored = 0;
    let mut out = Vec::new();
    let mut offset = 0;
    for line in comment.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let text = line.trim();
        let at = start + (line.len() - line.trim_start().len());
        while ignored.get(next_ignored).is_some_and(|r| r.end <= at) {
            next_ignored += 1;
        }
        if !text.starts_with('/') || ignored.get(next_ignored).is_some_and(|r| r.contains(&at)) {
            continue;
        }
        if let Some(parsed) = parse_line(text) {
            out.push(parsed);
        }
    }
    out
}

/// `None` when the line only looks like a command (a path such as `/usr/bin`, a lone `/`).
fn parse_line(line: &str) -> Option<(Result<Command, CommandError>, String)> {
    let body = &line[1..];
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(body.len());
    let (name, rest) = body.split_at(name_len);
    if name.is_empty() || !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let args: Vec<&str> = rest.split_whitespace().collect();
    let lower = name.to_ascii_lowercase();
    let rest = rest.trim().to_string();
    // A rollback's reason is free text.
    if lower == "rollback" {
        return Some((Ok(Command::Rollback), rest));
    }
    let (command, allowed): (Command, &[&str]) = match lower.as_str() {
        "approve"
            if args
                .first()
                .is_some_and(|a| a.eq_ignore_ascii_case("cancel")) =>
        {
            (Command::ApproveCancel, &["cancel"])
        }
        "approve" => (Command::Approve, &[]),
        "unapprove" => (Command::ApproveCancel, &[]),
        "hold" => (Command::Hold, &[]),
        "unhold" => (Command::Unhold, &[]),
        "retry" => (Command::Retry, &[]),
        "cancel" => (Command::Cancel, &[]),
        "help" => (Command::Help, &[]),
        _ => {
            return Some((
                Err(CommandError::Unknown {
                    name: name.to_string(),
                }),
                rest,
            ));
        }
    };
    if let Some(extra) = args.get(allowed.len()) {
        return Some((
            Err(CommandError::UnexpectedArgument {
                name: lower,
                argument: (*extra).to_string(),
                usage: command.usage().0,
            }),
            rest,
        ));
    }
    Some((Ok(command), rest))
}

/// Byte ranges of the comment that are not the author's own prose: code (fenced, indented,
/// inline), block quotes and HTML.
fn ignored_ranges(comment: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut open: Option<(usize, usize)> = None; // (start, nesting depth)
    for (event, range) in Parser::new(comment).into_offset_iter() {
        match (&event, open) {
            (Event::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_) | Tag::HtmlBlock), None) => {
                open = Some((range.start, 1));
            }
            (
                Event::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_) | Tag::HtmlBlock),
                Some((s, d)),
            ) => {
                open = Some((s, d + 1));
            }
            (
                Event::End(TagEnd::CodeBlock | TagEnd::BlockQuote(_) | TagEnd::HtmlBlock),
                Some((s, d)),
            ) => {
                if d == 1 {
                    ranges.push(s..range.end.max(s + 1));
                    open = None;
                } else {
                    open = Some((s, d - 1));
                }
            }
            (Event::Code(_) | Event::InlineHtml(_) | Event::Html(_), None) => ranges.push(range),
            _ => {}
        }
    }
    ranges
}

/// The reply to `/help`.
pub fn help_text() -> String {
    let mut s = String::from("Commands I understand on a release pull request:\n\n");
    for c in Command::ALL {
        let (usage, what) = c.usage();
        s.push_str(&format!("- `{usage}`: {what}\n"));
    }
    s.push_str(
        "\nA command must start its own line; commands in code blocks or quotes are ignored.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(comment: &str) -> Vec<Command> {
        parse_comment(comment)
            .into_iter()
            .map(|r| r.expect("a command"))
            .collect()
    }

    #[test]
    fn a_rollback_takes_its_reason_from_the_rest_of_its_line() {
        let c = "Staging is down.\n\n/rollback  the new image crashes on start \n/approve\n";
        assert_eq!(
            parse_comment(c),
            vec![Ok(Command::Rollback), Ok(Command::Approve)]
        );
        assert_eq!(
            rollback_reason(c).as_deref(),
            Some("the new image crashes on start")
        );
        assert_eq!(rollback_reason("/rollback"), None);
        // Quoted, it is no command and gives no reason.
        assert_eq!(rollback_reason("> /rollback because\n"), None);
        assert_eq!(parse_comment("> /rollback because\n"), vec![]);
    }

    #[test]
    fn each_command_parses() {
        assert_eq!(ok("/approve"), [Command::Approve]);
        assert_eq!(ok("/approve cancel"), [Command::ApproveCancel]);
        assert_eq!(ok("/unapprove"), [Command::ApproveCancel]);
        assert_eq!(ok("/hold"), [Command::Hold]);
        assert_eq!(ok("/unhold"), [Command::Unhold]);
        assert_eq!(ok("/retry"), [Command::Retry]);
        assert_eq!(ok("/cancel"), [Command::Cancel]);
        assert_eq!(ok("/help"), [Command::Help]);
        assert_eq!(ok("  /APPROVE  \r\n"), [Command::Approve]);
    }

    #[test]
    fn commands_among_prose_each_on_their_own_line() {
        let c = "Looks good to me.\n\n/approve\n\nBut wait for the scan:\n/hold\n";
        assert_eq!(ok(c), [Command::Approve, Command::Hold]);
        assert!(ok("I will /approve later").is_empty());
        assert!(
            ok("- /approve").is_empty(),
            "a list item is prose, not a command line"
        );
    }

    #[test]
    fn code_quotes_and_html_are_not_commands() {
        for c in [
            "```\n/approve\n```",
            "~~~text\n/approve\n~~~\n",
            "    /approve\n",
            "`/approve`",
            "> /approve\n",
            "> quoting\n>\n> /approve\n",
            "<details>\n/approve\n</details>\n",
        ] {
            assert_eq!(parse_comment(c), [], "{c:?}");
        }
        assert_eq!(
            ok("> someone said\n> /approve\n\n/hold\n"),
            [Command::Hold],
            "a quote ends, and prose after it counts"
        );
        assert_eq!(ok("```\n/approve\n```\n/retry"), [Command::Retry]);
    }

    #[test]
    fn paths_and_lone_slashes_are_not_commands() {
        for c in [
            "/usr/bin/env",
            "/",
            "/ approve",
            "/approve/now",
            "/path.yaml",
        ] {
            assert_eq!(parse_comment(c), [], "{c:?}");
        }
    }

    #[test]
    fn unknown_commands_and_stray_arguments_get_helpful_errors() {
        let e = parse_comment("/aprove").remove(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/aprove` is not a command I know; did you mean `/approve`?"
        );
        let e = parse_comment("/deploy-now").remove(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/deploy-now` is not a command I know; write `/help` for the list"
        );
        let e = parse_comment("/approve please").remove(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/approve` takes no argument `please`; write `/approve`"
        );
        let e = parse_comment("/approve cancel now").remove(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/approve` takes no argument `now`; write `/approve cancel`"
        );
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text();
        for c in Command::ALL {
            assert!(h.contains(&format!("`{}`", c.usage().0)), "{c:?} in {h}");
        }
    }
}
