//! The download path against a local HTTP server on 127.0.0.1 serving files this test makes:
//! a good checksum keeps the file, a wrong one keeps nothing, a missing file is a clear error, and
//! a CIFAR-style .tar.gz is unpacked and then loads as a dataset.

use mocov3::data::download::{fetch, fetch_all, file_md5, Remote};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

/// Serve `files` (path → bytes) over HTTP/1.1 on a fresh loopback port; returns the base URL.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req).lines().next().unwrap_or("").to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not here".to_vec()),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-dl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn md5_of(bytes: &[u8]) -> String {
    // A directory per call: tests run in parallel threads of one process, and `tmp` empties it.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = tmp(&format!("md5-{n}")).join("x");
    std::fs::write(&p, bytes).unwrap();
    file_md5(&p).unwrap()
}

#[test]
fn good_checksum_keeps_the_file_and_a_bad_one_keeps_nothing() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let base = serve(vec![("/data.bin", payload.clone())]);
    let dir = tmp("checksum");
    let good = dir.join("good.bin");
    fetch(&format!("{base}/data.bin"), &good, &md5_of(&payload)).unwrap();
    assert_eq!(std::fs::read(&good).unwrap(), payload);

    let bad = dir.join("bad.bin");
    let e = format!("{:#}", fetch(&format!("{base}/data.bin"), &bad, "00000000000000000000000000000000").unwrap_err());
    assert!(e.contains("checksum mismatch") && e.contains("/data.bin"), "{e}");
    assert!(!bad.exists() && !bad.with_extension("part").exists(), "nothing is kept after a bad checksum");

    let e = format!("{:#}", fetch(&format!("{base}/missing.bin"), &dir.join("m.bin"), "x").unwrap_err());
    assert!(e.contains("missing.bin") && e.contains("404"), "{e}");
}

#[test]
fn a_cifar_archive_is_fetched_unpacked_and_loads() {
    // A CIFAR-10 binary archive in the real layout, with 3 train records per batch file.
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072u32).map(|i| (i % 256) as u8));
        r
    };
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let mut add = |name: &str, data: Vec<u8>| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        };
        for i in 1..=5 {
            add(&format!("cifar-10-batches-bin/data_batch_{i}.bin"), (0..3).flat_map(|k| record(k as u8)).collect());
        }
        add("cifar-10-batches-bin/test_batch.bin", (0..2).flat_map(|k| record(k as u8 + 5)).collect());
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let archive = gz.finish().unwrap();
    let base = serve(vec![("/cifar-10-binary.tar.gz", archive.clone())]);
    let url: &'static str = Box::leak(base.into_boxed_str());
    let md5: &'static str = Box::leak(md5_of(&archive).into_boxed_str());
    let dir = tmp("cifar");
    let remotes = [Remote { url, file: "cifar-10-binary.tar.gz", md5 }];
    fetch_all(&remotes, &dir).unwrap();
    let set = mocov3::data::cifar::load("cifar10", std::slice::from_ref(&dir), true).unwrap();
    assert_eq!((set.len(), set.h, set.w, set.c), (15, 32, 32, 3));
    let test = mocov3::data::cifar::load("cifar10", std::slice::from_ref(&dir), false).unwrap();
    assert_eq!(test.labels, vec![5, 6]);
    // A second call finds the verified archive and does not download again (the server is
    // still up, but the file's checksum is what decides).
    fetch_all(&remotes, &dir).unwrap();
}
