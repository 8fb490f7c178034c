//! Writes the event stream to the virtio-serial port (or the console if the
//! port is missing, prefixed so the host can still find the events).
use std::fs::File;
use std::io::Write;

use events::{Event, EventBody, CONSOLE_EVENT_PREFIX};

pub struct Emitter {
    port: Option<File>,
}

impl Emitter {
    pub fn open() -> Self {
        let port = find_port(events::EVENT_PORT)
            .and_then(|p| std::fs::OpenOptions::new().write(true).open(p).ok());
        if port.is_none() {
            crate::sys::console("harness agent: no event port; sending events on the console");
        }
        Emitter { port }
    }

    pub fn emit(&mut self, body: EventBody) {
        let line = Event::new(crate::sys::boottime_ms(), body).to_line();
        let ok = match &mut self.port {
            Some(f) => f.write_all(format!("{line}\n").as_bytes()).is_ok(),
            None => false,
        };
        if !ok {
            crate::sys::console(&format!("{CONSOLE_EVENT_PREFIX}{line}"));
        }
    }

    pub fn log(&mut self, message: &str) {
        self.emit(EventBody::Log {
            message: message.to_string(),
        });
    }
}

/// Without udev there is no /dev/virtio-ports/NAME link: look the name up in sysfs.
fn find_port(name: &str) -> Option<String> {
    let by_name = format!("/dev/virtio-ports/{name}");
    if std::path::Path::new(&by_name).exists() {
        return Some(by_name);
    }
    for entry in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}
