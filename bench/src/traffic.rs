//! Traffic profiles of `xvs-bench run`: frames built once per target (templates) and stamped per
//! send. 64-byte UDP over N flows; IMIX (7 × 64, 4 × 576, 1 × 1500 bytes on the wire, the classic
//! "simple IMIX" of RFC 6985 / Agilent); TCP SYN flood from random sources; pcap/pcapng replay
//! rewritten onto the testbed's addresses.
//!
//! Timestamps: each UDP payload starts with `MAGIC`, a monotonic timestamp (ns since the run's
//! epoch, read by the sink in the same process) and a 16-bit compensation word chosen so that the
//! ones'-complement sum of timestamp + compensation is zero: the UDP checksum computed once for
//! the template stays valid after stamping (RFC 1071 arithmetic), at no per-frame cost.

use std::net::Ipv4Addr;
use std::path::Path;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

pub const MAGIC: [u8; 4] = *b"XVSB";
/// magic + u64 timestamp + u16 compensation.
pub const STAMP_LEN: usize = 14;
/// Destination port of all benchmark traffic (discard): the sinks count and drop it.
pub const BENCH_PORT: u16 = 9;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    Udp64,
    Imix,
    SynFlood,
    Pcap(std::path::PathBuf),
}

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Udp64 => "udp64",
            Profile::Imix => "imix",
            Profile::SynFlood => "synflood",
            Profile::Pcap(_) => "pcap",
        }
    }
}

/// Addresses every frame of a target uses.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

/// Prebuilt frames; `stamp[i]` is the offset of the stamp in `frames[i]` (None: no room or not
/// UDP). For a SYN flood `random_src` asks the generator to rewrite source address and port.
#[derive(Clone, Debug, Default)]
pub struct Templates {
    pub frames: Vec<Vec<u8>>,
    pub stamp: Vec<Option<usize>>,
    pub random_src: bool,
}

/// Frame sizes without FCS (the wire adds 4): 60, 572, 1514.
const IMIX: [usize; 12] = [60, 60, 60, 60, 60, 60, 60, 572, 572, 572, 572, 1514];

fn udp_frame(ep: &Endpoints, sport: u16, frame_len: usize) -> (Vec<u8>, Option<usize>) {
    let payload_len = frame_len.saturating_sub(14 + 20 + 8).max(STAMP_LEN);
    let mut payload = vec![0u8; payload_len];
    payload[..4].copy_from_slice(&MAGIC);
    let b = PacketBuilder::ethernet2(ep.src_mac, ep.dst_mac)
        .ipv4(ep.src_ip.octets(), ep.dst_ip.octets(), 64)
        .udp(sport, BENCH_PORT);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).expect("write to a Vec");
    (out, Some(14 + 20 + 8))
}

fn syn_frame(ep: &Endpoints, sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ep.src_mac, ep.dst_mac)
        .ipv4(ep.src_ip.octets(), ep.dst_ip.octets(), 64)
        .tcp(sport, BENCH_PORT, 1, 64240)
        .syn();
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).expect("write to a Vec");
    // Pad to the 60-byte minimum like a NIC would.
    out.resize(60, 0);
    out
}

/// Build the templates of `profile` for `flows` flows (source ports 10000 + i).
pub fn templates(profile: &Profile, ep: &Endpoints, flows: u32) -> Result<Templates, String> {
    let flows = flows.clamp(1, 50_000);
    let mut t = Templates::default();
    match profile {
        Profile::Udp64 | Profile::Imix => {
            for i in 0..flows {
                let len = if *profile == Profile::Imix {
                    IMIX[i as usize % IMIX.len()]
                } else {
                    60
                };
                let (f, s) = udp_frame(ep, 10000u16.wrapping_add(i as u16), len);
                t.frames.push(f);
                t.stamp.push(s);
            }
        }
        Profile::SynFlood => {
            t.frames.push(syn_frame(ep, 10000));
            t.stamp.push(None);
            t.random_src = true;
        }
        Profile::Pcap(path) => {
            for raw in read_capture(path)? {
                if let Some((f, s)) = rewrite(&raw, ep) {
                    t.frames.push(f);
                    t.stamp.push(s);
                }
            }
            if t.frames.is_empty() {
                return Err(format!(
                    "{}: no IPv4 TCP/UDP frame to replay",
                    path.display()
                ));
            }
        }
    }
    Ok(t)
}

/// Frames of a pcap or pcapng file (at most 200 000).
pub fn read_capture(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    if data.len() >= 4 && data[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&data[..])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        while let Some(b) = r.next_block() {
            let b = b.map_err(|e| format!("{}: {e}", path.display()))?;
            match b {
                pcap_file::pcapng::Block::EnhancedPacket(p) => out.push(p.data.to_vec()),
                pcap_file::pcapng::Block::SimplePacket(p) => out.push(p.data.to_vec()),
                _ => {}
            }
            if out.len() >= 200_000 {
                break;
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&data[..])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(p.data.to_vec());
            if out.len() >= 200_000 {
                break;
            }
        }
    }
    Ok(out)
}

/// Rewrite one captured Ethernet frame onto the testbed: MACs and addresses from `ep`,
/// destination port [`BENCH_PORT`] (source port and payload kept), checksums recomputed.
/// Non-IPv4 and non-TCP/UDP frames are skipped (None).
pub fn rewrite(raw: &[u8], ep: &Endpoints) -> Option<(Vec<u8>, Option<usize>)> {
    let p = SlicedPacket::from_ethernet(raw).ok()?;
    let net = p.net.as_ref()?;
    let etherparse::NetSlice::Ipv4(ip) = net else {
        return None;
    };
    if ip.header().is_fragmenting_payload() {
        return None;
    }
    let ttl = ip.header().ttl().max(2);
    let b = PacketBuilder::ethernet2(ep.src_mac, ep.dst_mac).ipv4(
        ep.src_ip.octets(),
        ep.dst_ip.octets(),
        ttl,
    );
    let mut out = Vec::new();
    match p.transport.as_ref()? {
        TransportSlice::Udp(u) => {
            let mut payload = u.payload().to_vec();
            let stamp = if payload.len() >= STAMP_LEN {
                payload[..4].copy_from_slice(&MAGIC);
                payload[4..STAMP_LEN].fill(0);
                Some(14 + 20 + 8)
            } else {
                None
            };
            let b = b.udp(u.source_port(), BENCH_PORT);
            b.write(&mut out, &payload).ok()?;
            Some((out, stamp))
        }
        TransportSlice::Tcp(t) => {
            let mut b = b.tcp(
                t.source_port(),
                BENCH_PORT,
                t.sequence_number(),
                t.window_size(),
            );
            if t.syn() {
                b = b.syn();
            }
            if t.ack() {
                b = b.ack(t.acknowledgment_number());
            }
            if t.fin() {
                b = b.fin();
            }
            if t.rst() {
                b = b.rst();
            }
            if t.psh() {
                b = b.psh();
            }
            b.write(&mut out, t.payload()).ok()?;
            Some((out, None))
        }
        _ => None,
    }
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Write the stamp (timestamp `ns`) at `off`, keeping the transport checksum valid.
pub fn stamp(frame: &mut [u8], off: usize, ns: u64) {
    let Some(s) = frame.get_mut(off..off + STAMP_LEN) else {
        return;
    };
    s[4..12].copy_from_slice(&ns.to_be_bytes());
    let mut sum = 0u32;
    for w in s[4..12].chunks_exact(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    let comp = !fold(sum);
    s[12..14].copy_from_slice(&comp.to_be_bytes());
}

/// The timestamp in a payload that starts with a stamp.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    if payload.len() < STAMP_LEN || payload[..4] != MAGIC {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&payload[4..12]);
    Some(u64::from_be_bytes(b))
}

/// Rewrite a SYN template's source address and port (IPv4 header and TCP checksums updated
/// incrementally, RFC 1624).
pub fn set_syn_source(frame: &mut [u8], addr: Ipv4Addr, port: u16) {
    if frame.len() < 14 + 20 + 20 {
        return;
    }
    let old_a = [
        u16::from_be_bytes([frame[26], frame[27]]),
        u16::from_be_bytes([frame[28], frame[29]]),
    ];
    let o = addr.octets();
    let new_a = [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ];
    let old_p = u16::from_be_bytes([frame[34], frame[35]]);
    frame[26..30].copy_from_slice(&o);
    frame[34..36].copy_from_slice(&port.to_be_bytes());
    let ipc = u16::from_be_bytes([frame[24], frame[25]]);
    let ipc = csum_update(ipc, &old_a, &new_a);
    frame[24..26].copy_from_slice(&ipc.to_be_bytes());
    let tc = u16::from_be_bytes([frame[50], frame[51]]);
    let tc = csum_update(
        tc,
        &[old_a[0], old_a[1], old_p],
        &[new_a[0], new_a[1], port],
    );
    frame[50..52].copy_from_slice(&tc.to_be_bytes());
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
pub fn csum_update(hc: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = (!hc) as u32;
    for (&o, &n) in old.iter().zip(new) {
        s += (!o) as u32 + n as u32;
    }
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoints {
        Endpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(198, 18, 1, 10),
            dst_ip: Ipv4Addr::new(198, 18, 10, 1),
        }
    }

    fn checksums_ok(f: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            return false;
        };
        let h = ip.header().to_header();
        if h.calc_header_checksum() != h.header_checksum {
            return false;
        }
        match p.transport.unwrap() {
            TransportSlice::Udp(u) => {
                u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum()
            }
            TransportSlice::Tcp(t) => {
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum()
            }
            _ => false,
        }
    }

    #[test]
    fn udp64_is_60_bytes_and_stamping_keeps_the_checksum() {
        let t = templates(&Profile::Udp64, &ep(), 3).unwrap();
        assert_eq!(t.frames.len(), 3);
        for (f, s) in t.frames.iter().zip(&t.stamp) {
            assert_eq!(f.len(), 60);
            let mut f = f.clone();
            for ns in [
                0u64,
                1,
                0xffff_ffff_ffff_ffff,
                123_456_789_012,
                0x8000_0000_0000_fffe,
            ] {
                stamp(&mut f, s.unwrap(), ns);
                assert!(checksums_ok(&f), "ns {ns}");
                assert_eq!(read_stamp(&f[s.unwrap()..]), Some(ns));
            }
        }
    }

    #[test]
    fn imix_sizes() {
        let t = templates(&Profile::Imix, &ep(), 12).unwrap();
        let mut sizes: Vec<usize> = t.frames.iter().map(Vec::len).collect();
        sizes.sort();
        assert_eq!(sizes.iter().filter(|&&s| s == 60).count(), 7);
        assert_eq!(sizes.iter().filter(|&&s| s == 572).count(), 4);
        assert_eq!(sizes.iter().filter(|&&s| s == 1514).count(), 1);
    }

    #[test]
    fn syn_source_rewrite_keeps_checksums() {
        let t = templates(&Profile::SynFlood, &ep(), 1).unwrap();
        let mut f = t.frames[0].clone();
        assert!(checksums_ok(&f));
        for (a, p) in [
            (Ipv4Addr::new(198, 19, 200, 7), 1u16),
            (Ipv4Addr::new(198, 19, 0, 0), 65535),
            (Ipv4Addr::new(198, 18, 255, 255), 40000),
        ] {
            set_syn_source(&mut f, a, p);
            assert!(checksums_ok(&f));
            assert_eq!(&f[26..30], &a.octets());
        }
        // Too short: no panic, no change.
        let mut short = vec![0u8; 20];
        set_syn_source(&mut short, Ipv4Addr::new(1, 2, 3, 4), 5);
        assert_eq!(short, vec![0u8; 20]);
    }

    #[test]
    fn pcap_frames_are_rewritten_with_valid_checksums() {
        let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/capture.pcap");
        let raw = read_capture(&cap).unwrap();
        assert!(!raw.is_empty());
        let t = templates(&Profile::Pcap(cap), &ep(), 1).unwrap();
        assert!(!t.frames.is_empty());
        for f in &t.frames {
            assert!(checksums_ok(f));
            assert_eq!(&f[30..34], &[198, 18, 10, 1]);
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), BENCH_PORT);
        }
        // Garbage is skipped, never a panic.
        assert!(rewrite(&[0u8; 10], &ep()).is_none());
        assert!(rewrite(&[], &ep()).is_none());
    }
}
