//! A minimal QMP client: enough to send a serial break (for sysrq) and quit.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(socket: &Path) -> std::io::Result<Qmp> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let mut greeting = String::new();
        q.reader.read_line(&mut greeting)?;
        q.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(q)
    }

    /// Send one command and wait for its reply (skipping asynchronous events).
    pub fn execute(&mut self, command: &str) -> std::io::Result<serde_json::Value> {
        self.writer.write_all(command.as_bytes())?;
        self.writer.write_all(b"\n")?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QMP closed",
                ));
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if v.get("return").is_some() || v.get("error").is_some() {
                return Ok(v);
            }
        }
    }

    /// A break on the serial line: the next character is a sysrq key.
    pub fn send_break(&mut self, chardev: &str) -> std::io::Result<serde_json::Value> {
        self.execute(&format!(
            r#"{{"execute":"chardev-send-break","arguments":{{"id":"{chardev}"}}}}"#
        ))
    }
}
