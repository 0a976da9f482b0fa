//! push-jose from the command line, for interoperability checks:
//!
//!   jwe seal <public-jwk-file>   < plaintext  > compact JWE
//!   jwe open <private-jwk-file>  < compact JWE > plaintext
//!
//! Exits 1 with the reason on stderr when the key or the JWE is refused.

use std::io::{Read, Write};

fn run() -> Result<Vec<u8>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, key_file] = &args[..] else {
        return Err("usage: jwe seal|open <jwk-file>".into());
    };
    let jwk: serde_json::Value = std::fs::read(key_file)
        .map_err(|e| format!("{key_file}: {e}"))
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("{key_file}: {e}")))?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())?;
    match command.as_str() {
        "seal" => {
            let key = push_jose::PublicKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
            push_jose::seal(&key, &input, None)
                .map(String::into_bytes)
                .map_err(|e| e.to_string())
        }
        "open" => {
            let key = push_jose::PrivateKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
            let compact = String::from_utf8(input).map_err(|e| e.to_string())?;
            push_jose::open(compact.trim(), &key).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown command `{other}` (seal or open)")),
    }
}

fn main() {
    match run() {
        Ok(output) => {
            let _ = std::io::stdout().write_all(&output);
        }
        Err(e) => {
            eprintln!("jwe: {e}");
            std::process::exit(1);
        }
    }
}
