//! Checksum-verified downloads of the named datasets from their canonical addresses into a cache
//! (`$MOCOV3_DATA/<name>`, else `$XDG_CACHE_HOME/mocov3/<name>` or `~/.cache/mocov3/<name>`).
//! Every file goes to a temporary name, its MD5 is checked against the published one (the values
//! torchvision uses), and only then is it renamed into place; a CIFAR archive is then unpacked.
//! A wrong checksum is an error that names the address and both sums, and leaves nothing behind.

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One file of a dataset at its canonical address.
pub struct Remote {
    pub url: &'static str,
    pub file: &'static str,
    pub md5: &'static str,
}

const FMNIST: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";
const MNIST: &str = "https://storage.googleapis.com/cvdf-datasets/mnist";

/// The canonical files of a dataset, if it can be downloaded.
pub fn remotes(name: &str) -> Option<Vec<Remote>> {
    let idx = |base: &'static str, sums: [&'static str; 4]| {
        let files = [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ];
        files.iter().zip(sums).map(|(f, md5)| Remote { url: base, file: f, md5 }).collect()
    };
    Some(match name {
        "fashion-mnist" => idx(
            FMNIST,
            [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        ),
        "mnist" => idx(
            MNIST,
            [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
        ),
        "cifar10" => vec![Remote {
            url: "https://www.cs.toronto.edu/~kriz",
            file: "cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
        }],
        "cifar100" => vec![Remote {
            url: "https://www.cs.toronto.edu/~kriz",
            file: "cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
        }],
        _ => return None,
    })
}

/// Where downloads of `name` go.
pub fn cache_dir(name: &str) -> PathBuf {
    if let Ok(d) = std::env::var("MOCOV3_DATA") {
        return PathBuf::from(d).join(name);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join("mocov3").join(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GET `url` into `dest`, requiring the MD5 `md5` (lower-case hex): streamed to `dest.part`,
/// checked, then renamed.
pub fn fetch(url: &str, dest: &Path, md5: &str) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = dest.with_extension("part");
    let result = (|| -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .timeout_recv_response(Some(std::time::Duration::from_secs(60)))
            .build()
            .into();
        let resp = agent.get(url).call().with_context(|| format!("downloading {url}"))?;
        let mut body = resp.into_body().into_reader();
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf).with_context(|| format!("reading {url}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n]).with_context(|| format!("writing {}", tmp.display()))?;
        }
        f.sync_all()?;
        Ok(hex(&hasher.finalize()))
    })();
    let got = match result {
        Ok(g) => g,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if got != md5 {
        let _ = std::fs::remove_file(&tmp);
        bail!("{url}: checksum mismatch (MD5 {got}, expected {md5}): the download is damaged or the file changed upstream; nothing was kept");
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    Ok(())
}

/// Download every file of `remotes` into `dir` (skipping those already there with the right
/// checksum) and unpack `.tar.gz` archives. Returns `dir`.
pub fn fetch_all(remotes: &[Remote], dir: &Path) -> Result<PathBuf> {
    for r in remotes {
        let dest = dir.join(r.file);
        if !(dest.exists() && file_md5(&dest)? == r.md5) {
            eprintln!("downloading {}/{} -> {}", r.url, r.file, dest.display());
            fetch(&format!("{}/{}", r.url, r.file), &dest, r.md5)?;
        }
        if r.file.ends_with(".tar.gz") {
            let f = std::fs::File::open(&dest)?;
            tar::Archive::new(flate2::read::GzDecoder::new(f))
                .unpack(dir)
                .with_context(|| format!("unpacking {}", dest.display()))?;
        }
    }
    Ok(dir.to_path_buf())
}

pub fn file_md5(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Md5::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}
