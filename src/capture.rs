//! Reading and writing packet captures (pcap and pcapng, Ethernet link type) for `xvs replay`
//! and `xvs simulate`. Cold path: captures are read whole into memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// One frame of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Time since the Unix epoch, as recorded.
    pub timestamp: Duration,
    /// pcapng interface number (0 for pcap).
    pub interface: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{file}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Format { file: PathBuf, message: String },
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io {
        file: file.to_owned(),
        source,
    }
}

fn fmt_err(file: &Path, message: impl std::fmt::Display) -> CaptureError {
    CaptureError::Format {
        file: file.to_owned(),
        message: message.to_string(),
    }
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Read every frame of a pcap or pcapng file (told apart by their magic numbers). Only
/// Ethernet captures are accepted.
pub fn read_capture(file: &Path) -> Result<Vec<CapturedFrame>, CaptureError> {
    let mut f = File::open(file).map_err(io_err(file))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).map_err(io_err(file))?;
    let f = File::open(file).map_err(io_err(file))?;
    let reader = BufReader::new(f);
    let mut out = Vec::new();
    if magic == PCAPNG_MAGIC {
        let mut r = PcapNgReader::new(reader).map_err(|e| fmt_err(file, e))?;
        let mut links = Vec::new();
        while let Some(block) = r.next_block() {
            match block.map_err(|e| fmt_err(file, e))? {
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links.get(epb.interface_id as usize).copied();
                    if link != Some(DataLink::ETHERNET) {
                        return Err(fmt_err(
                            file,
                            format!(
                                "interface {} is {link:?}, only Ethernet is supported",
                                epb.interface_id
                            ),
                        ));
                    }
                    out.push(CapturedFrame {
                        timestamp: epb.timestamp,
                        interface: epb.interface_id,
                        data: epb.data.into_owned(),
                    });
                }
                Block::SimplePacket(spb) => out.push(CapturedFrame {
                    timestamp: out.last().map_or(Duration::ZERO, |l| l.timestamp),
                    interface: 0,
                    data: spb.data.into_owned(),
                }),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(reader).map_err(|e| fmt_err(file, e))?;
        let link = r.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(fmt_err(
                file,
                format!("link type {link:?}, only Ethernet is supported"),
            ));
        }
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| fmt_err(file, e))?;
            out.push(CapturedFrame {
                timestamp: p.timestamp,
                interface: 0,
                data: p.data.into_owned(),
            });
        }
    }
    Ok(out)
}

/// A pcap writer for Ethernet frames.
pub struct CaptureWriter {
    file: PathBuf,
    w: PcapWriter<BufWriter<File>>,
}

impl CaptureWriter {
    pub fn create(file: &Path) -> Result<Self, CaptureError> {
        let f = File::create(file).map_err(io_err(file))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let w = PcapWriter::with_header(BufWriter::new(f), header).map_err(|e| fmt_err(file, e))?;
        Ok(CaptureWriter {
            file: file.to_owned(),
            w,
        })
    }

    pub fn write(&mut self, timestamp: Duration, data: &[u8]) -> Result<(), CaptureError> {
        let p = PcapPacket::new(timestamp, data.len() as u32, data);
        self.w
            .write_packet(&p)
            .map(|_| ())
            .map_err(|e| fmt_err(&self.file, e))
    }

    pub fn finish(self) -> Result<(), CaptureError> {
        use std::io::Write;
        let file = self.file;
        self.w.into_writer().flush().map_err(io_err(&file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_round_trip() {
        let dir = std::env::temp_dir().join(format!("xvs-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.pcap");
        let mut w = CaptureWriter::create(&path).unwrap();
        w.write(Duration::from_micros(1_500_000), &[1, 2, 3, 4])
            .unwrap();
        w.write(Duration::from_micros(2_000_001), &[5; 60]).unwrap();
        w.finish().unwrap();
        let frames = read_capture(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].data, vec![1, 2, 3, 4]);
        assert_eq!(frames[1].timestamp, Duration::from_micros(2_000_001));
        std::fs::write(dir.join("bad"), b"not a capture at all").unwrap();
        assert!(read_capture(&dir.join("bad")).is_err());
        assert!(read_capture(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
