//! Who is scanning: the host name and the primary non-loopback address, found locally.
//!
//! The old script asked a public web service for the VM's IP address. That leaks the fleet's
//! layout, fails on air-gapped VMs and is not needed: the interface table says the same for a
//! VM with a public address, and the private address (what the central database can tell
//! apart) otherwise.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host name (gethostname(2)), or `None` if it is empty or not UTF-8.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // (the last byte stays 0 if the name was truncated).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let name = CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// How good an address is as "this machine's address": lower is better.
fn rank(ip: &IpAddr) -> Option<u8> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_unspecified() => None,
        IpAddr::V4(v4) if v4.is_link_local() => Some(3),
        IpAddr::V4(_) => Some(0),
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => None,
        // fe80::/10 link-local: only meaningful with an interface.
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(_) => Some(1),
    }
}

/// The interface addresses of up interfaces (getifaddrs(3)).
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: sa_family says which sockaddr variant ifa_addr points to.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The first usable address in order of preference: IPv4, global IPv6, IPv4 link-local.
pub fn primary_address() -> Option<IpAddr> {
    pick(&interface_addresses())
}

fn pick(addrs: &[IpAddr]) -> Option<IpAddr> {
    addrs
        .iter()
        .filter_map(|a| rank(a).map(|r| (r, *a)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_primary_and_ipv4_wins() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let ll6: IpAddr = "fe80::1".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(pick(&[lo, lo6, ll6]), None);
        assert_eq!(pick(&[lo, v6, v4]), Some(v4));
        assert_eq!(pick(&[lo, ll6, v6]), Some(v6));
    }

    #[test]
    fn this_host_has_a_name_and_its_address_is_not_loopback() {
        assert!(hostname().is_some());
        if let Some(a) = primary_address() {
            assert!(!a.is_loopback());
        }
    }
}
