//! Private hosts on this machine: network namespaces, each with a veth pair into one
//! bridge in the root namespace, made with `ip` (iproute2) and all removed by the guard's
//! drop, however the check ends. Every name starts with [`PREFIX`], so leftovers of an
//! earlier run that was killed are found and removed before a new one starts.

use std::process::{Command, Stdio};

/// The start of every namespace, veth and bridge name made here.
pub const PREFIX: &str = "tbx-";

/// The bridge in the root namespace; it holds the root's address on the private network.
const BRIDGE: &str = "tbx-br";

/// The private network's first three octets (a /24 no route of this machine uses, checked
/// by [`Net::new`]); the root namespace (the clients) is .1.
pub const SUBNET: &str = "10.231.77";

/// The namespaces and links made so far; dropping it removes them and kills what runs in
/// them.
pub struct Net {
    hosts: Vec<String>,
}

/// Runs `ip ARGS`; `Err` with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS`' standard output ("" on failure).
fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Net {
    /// Removes leftovers of an earlier run, then makes the bridge with the root's address
    /// (`SUBNET.1/24`). `Err` when the machine does not let this process make namespaces
    /// (the check then cannot run).
    pub fn new() -> Result<Net, String> {
        remove_leftovers();
        if ip_output(&["-4", "route"]).contains(&format!("{SUBNET}.")) {
            return Err(format!("{SUBNET}.0/24 is routed on this machine already"));
        }
        // A throwaway namespace first: the clearest test of the permission.
        ip(&["netns", "add", "tbx-probe"])
            .map_err(|e| format!("cannot create a network namespace ({e})"))?;
        let _ = ip(&["netns", "del", "tbx-probe"]);
        let net = Net { hosts: Vec::new() };
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// A host `tbx-NAME` at `SUBNET.OCTET`: a namespace with loopback up and one end of a
    /// veth pair (`tbx-NAME-i`) holding the address; the other end (`tbx-NAME-v`) in the
    /// bridge. Returns the namespace's name.
    pub fn add_host(&mut self, name: &str, octet: u8) -> Result<String, String> {
        let ns = format!("{PREFIX}{name}");
        let (outside, inside) = (format!("{ns}-v"), format!("{ns}-i"));
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &outside, "master", BRIDGE, "up"])?;
        let addr = format!("{SUBNET}.{octet}/24");
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Sets the bridge end of host `ns`'s link down (`up` false) or up: down, the host
    /// can send nothing at all, not even a reset, and receives nothing.
    pub fn set_link(&self, ns: &str, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &format!("{ns}-v"), state])
    }

    /// `ip netns exec NS PROGRAM`: a command running in host `ns`.
    pub fn command(ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.drain(..) {
            remove_namespace(&ns);
        }
        let _ = ip(&["link", "del", BRIDGE]);
    }
}

/// Kills what runs in `ns`, then deletes it (its veth pair goes with it).
fn remove_namespace(ns: &str) {
    for pid in ip_output(&["netns", "pids", ns]).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let _ = ip(&["netns", "del", ns]);
    let _ = ip(&["link", "del", &format!("{ns}-v")]);
}

/// Removes every namespace and link named `tbx-...` (an earlier run's, if it was killed
/// before its guard could drop).
pub fn remove_leftovers() {
    for line in ip_output(&["netns", "list"]).lines() {
        if let Some(ns) = line
            .split_whitespace()
            .next()
            .filter(|n| n.starts_with(PREFIX))
        {
            remove_namespace(ns);
        }
    }
    for line in ip_output(&["-o", "link"]).lines() {
        // "12: tbx-br: <...>" or "13: tbx-h1-v@if2: <...>"
        if let Some(name) = line.split(": ").nth(1) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(PREFIX) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// On SIGINT or SIGTERM (Ctrl-C in the middle of a run), kills this process's children
/// (the loads, HAProxy, the instances), removes everything named `tbx-...` and exits 1:
/// the process dies of the signal otherwise, and no Drop runs.
pub fn clean_up_on_signal() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("signal {signal}: stopping what this check started, removing the namespaces, veths and bridge it made");
            // The loads in the root namespace are this process's children too.
            for pid in harness::proc::children(std::process::id()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            remove_leftovers();
            std::process::exit(1);
        }
    });
    Ok(())
}

/// What is left named `tbx-...` (namespaces and links), for the check's last line.
pub fn leftovers() -> Vec<String> {
    let mut out: Vec<String> = ip_output(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect();
    for line in ip_output(&["-o", "link"]).lines() {
        if let Some(name) = line.split(": ").nth(1) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(PREFIX) {
                out.push(name.to_string());
            }
        }
    }
    out
}
