//! `seed-chat`: a command-line chat client on the SDK, for trying a server by hand and for
//! scripts. `login` keeps the session (tokens) in a file; the other commands read it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use seed_sdk::{Account, ChatClient, Event, Session, v1};

#[derive(Parser)]
#[command(name = "seed-chat", version, about = "A command-line client for Seed chat")]
struct Cli {
    /// The server's HTTP API.
    #[arg(long, env = "SEED_CHAT_HTTP", default_value = "http://127.0.0.1:8080")]
    http: String,
    /// The server's MQTT listener (host:port).
    #[arg(long, env = "SEED_CHAT_MQTT", default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Where `login` stores the session and the other commands read it.
    #[arg(long, env = "SEED_CHAT_SESSION", default_value = "seed-chat-session.json")]
    session: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account.
    Register { user: String, password: String },
    /// Log a device in and store the session.
    Login {
        user: String,
        password: String,
        #[arg(long, default_value = "cli")]
        device: String,
    },
    /// Send a text; prints its client_msg_id once the server stored it.
    Send { peer: String, text: String },
    /// Print inbox events as they arrive, one line each, until interrupted.
    Listen,
    /// Print the chat with a peer, newest first.
    History {
        peer: String,
        #[arg(long)]
        before: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Revoke the stored session's tokens.
    Logout,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let account = Account::new(&cli.http)?;
    match cli.command {
        Command::Register { user, password } => {
            let id = account.register(&user, &password).await?;
            println!("registered {id}");
        }
        Command::Login { user, password, device } => {
            let session = account.login(&user, &password, &device).await?;
            let text = serde_json::to_string_pretty(&session)?;
            std::fs::write(&cli.session, text)
                .with_context(|| format!("writing {}", cli.session.display()))?;
            println!("logged in as {}", session.client_id);
        }
        Command::Send { peer, text } => {
            let chat = ChatClient::connect(&cli.mqtt, &load(&cli.session)?).await?;
            let sent = chat.send_text(&peer, &text).await?;
            println!("sent client_msg_id={}", sent.client_msg_id);
            chat.disconnect().await?;
        }
        Command::Listen => {
            let mut chat = ChatClient::connect(&cli.mqtt, &load(&cli.session)?).await?;
            while let Some(event) = chat.next_event().await {
                if let Some(line) = render(&event) {
                    println!("{line}");
                }
                if let Event::Disconnected { reconnecting: false, .. } = event {
                    break;
                }
            }
        }
        Command::History { peer, before, limit } => {
            let session = load(&cli.session)?;
            let page = account.history(&session, &peer, before, Some(limit)).await?;
            for m in page.messages {
                println!("id={} from={} text={}", m.id, m.from, m.text);
            }
            if let Some(b) = page.next_before {
                println!("next_before={b}");
            }
        }
        Command::Logout => {
            account.logout(&load(&cli.session)?).await?;
            println!("logged out");
        }
    }
    Ok(())
}

fn load(path: &PathBuf) -> Result<Session> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading session {} (run login first)", path.display()))?;
    serde_json::from_str(&text).context("parsing the session file")
}

/// One line per event, `key=value` pairs, for people and for `grep`.
fn render(event: &Event) -> Option<String> {
    Some(match event {
        Event::Connected => "connected".into(),
        Event::Message { seq, message } => {
            let mut line =
                format!("seq={seq} from={} id={} text={}", message.from, message.id, message.text);
            if !message.chat.is_empty() {
                line.push_str(&format!(" chat={}", message.chat));
            }
            line
        }
        Event::Receipt { receipt, .. } => {
            let kind = match v1::receipt::Kind::try_from(receipt.kind) {
                Ok(v1::receipt::Kind::Read) => "read",
                _ => "delivered",
            };
            format!("receipt {kind} by={} up_to={}", receipt.by, receipt.up_to)
        }
        Event::Typing { typing } => format!("typing from={} active={}", typing.from, typing.active),
        Event::GroupEvent { seq, event } => format!("seq={seq} group={} event", event.group),
        Event::ServerError { seq, error } => {
            format!("seq={seq} error code={} message={}", error.code, error.message)
        }
        Event::Undecodable { seq, reason } => format!("undecodable seq={seq:?} {reason}"),
        Event::Disconnected { reason, reconnecting } => {
            format!("disconnected reconnecting={reconnecting} reason={reason}")
        }
    })
}
