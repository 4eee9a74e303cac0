//! The real `switchboard` binary as a child process: started on a free port (`--listen
//! 127.0.0.1:0`), its address read from the banner, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

/// How long a process may take to print its banner (it waits for Redis first).
const BANNER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A running `switchboard` process.
pub struct NodeProcess {
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    /// The banner lines after the first.
    pub banner: Vec<String>,
    child: Child,
}

impl NodeProcess {
    /// Runs `bin args... --listen 127.0.0.1:0` with `env` (and no inherited Switchboard
    /// credentials), and waits for its banner.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::start_logged(bin, args, env, None)
    }

    /// [`NodeProcess::start`], with the process's log (stderr) written to `log` when given:
    /// what a failed fault scenario leaves to read.
    pub fn start_logged(bin: &str, args: &[&str], env: &[(&str, &str)], log: Option<&std::path::Path>) -> NodeProcess {
        let stderr = match log {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())))
            }
            None => Stdio::null(),
        };
        let mut cmd = Command::new(bin);
        cmd.args(args).args(["--listen", "127.0.0.1:0"]);
        for var in ["SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_ADMIN_KEY", "SWITCHBOARD_CONFIG", "SWITCHBOARD_REDIS_URL"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        // Read the banner on a thread so that a process that never prints it fails the test
        // after a bound instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = || rx.recv_timeout(BANNER_TIMEOUT).unwrap_or_else(|_| panic!("{bin} printed no banner in time"));
        let first = next();
        let addr = first
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in banner: {first}"))
            .to_owned();
        // The banner ends with an empty line.
        let banner: Vec<String> = std::iter::repeat_with(next).take_while(|l| !l.is_empty()).collect();
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        NodeProcess { addr, banner, child }
    }

    /// The process id (to read its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the process a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The value of one series on the process's `/metrics` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_request(&self.addr, "GET", "/metrics", "", "");
        crate::metric_value(&text, series)
    }

    /// Waits up to `bound` for the process to exit on its own; its exit status, or `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, bound: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + bound;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `POST path` with a bearer key and a JSON body over a plain socket (no runtime needed);
/// returns the status code and the body.
pub fn http_post(addr: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, bearer, body)
}

/// Any request with a bearer key and a JSON body over a plain socket; returns the status code
/// and the body.
pub fn http_request(addr: &str, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect for an HTTP request");
    // A process that never answers (stopped, wedged) fails the test instead of hanging it.
    s.set_read_timeout(Some(crate::WAIT)).expect("set a read timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send the request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read answer");
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no HTTP status line in {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
