//! Model checkpoints mounted for real: safetensors files written in the test run by the
//! `safetensors` library (every dtype, bfloat16/float8 through ml_dtypes), checked against
//! what that library reads (tests/py/checkpoint_cases.py). Bad input: truncated files, a
//! header length that lies, JSON that is not an object, offsets past the end, tensors whose
//! bytes do not fit their shape.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{run_py, Mount, TempDir};

fn written(name: &str, command: &str) -> TempDir {
    let dir = TempDir::new(name);
    run_py(
        "checkpoint_cases.py",
        &[OsStr::new(command), dir.path().as_os_str()],
    );
    dir
}

/// Mounts `source` with `extra` options and runs `checkpoint_cases.py CHECK SOURCE MOUNT ARGS`.
fn mount_and_check(source: &Path, extra: &[&str], check: &str, args: &[&str]) -> String {
    let mount = Mount::new(source, extra);
    let mut py_args = vec![
        OsStr::new(check),
        source.as_os_str(),
        mount.point.as_os_str(),
    ];
    py_args.extend(args.iter().map(OsStr::new));
    let out = run_py("checkpoint_cases.py", &py_args);
    mount.stop();
    out
}

#[test]
fn safetensors_of_every_dtype_equal_the_library() {
    let dir = written("st-dtypes", "st-write");
    let out = mount_and_check(&dir.join("model.safetensors"), &[], "st-check", &[]);
    assert!(out.contains("21 tensors ok"), "{out}");
}

#[test]
fn safetensors_split_names_makes_directories() {
    let dir = written("st-split", "st-write");
    let source = dir.join("model.safetensors");
    let out = mount_and_check(&source, &["-o", "split_names=."], "st-check", &["."]);
    assert!(out.contains("21 tensors ok"), "{out}");
}

#[test]
fn safetensors_shards_in_a_directory_are_detected_by_content() {
    let dir = written("st-dir", "st-write");
    let hf = dir.join("hf");
    // Renamed without the extension: detection is by content.
    std::fs::rename(
        hf.join("model-00002-of-00002.safetensors"),
        hf.join("shard2"),
    )
    .unwrap();
    let mount = Mount::new(&hf, &[]);
    let mut names: Vec<String> = std::fs::read_dir(&mount.point)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["extra.npz", "model-00001-of-00002.safetensors", "shard2"]
    );
    for shard in ["model-00001-of-00002.safetensors", "shard2"] {
        let out = run_py(
            "checkpoint_cases.py",
            &[
                OsStr::new("st-check"),
                hf.join(shard).as_os_str(),
                mount.path(shard).as_os_str(),
            ],
        );
        assert!(out.contains("tensors ok"), "{out}");
    }
    mount.stop();
}

#[test]
fn safetensors_ls_and_cat_work_without_a_mount() {
    let dir = written("st-ls", "st-write");
    let source = dir.join("model.safetensors");
    let out = common::arrfs().arg("ls").arg(&source).output().unwrap();
    common::assert_success("arrfs ls", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("model.layers.1.attn.q.weight.npy") && text.contains("<V2"),
        "{text}"
    );
    let cat = dir.join("i32.npy");
    let out = common::arrfs()
        .arg("cat")
        .arg(&source)
        .arg("i32.npy")
        .arg("--output")
        .arg(&cat)
        .output()
        .unwrap();
    common::assert_success("arrfs cat", &out);
    let check = format!(
        "import numpy as np\nfrom safetensors import safe_open\n\
         f = safe_open({:?}, 'numpy')\n\
         assert np.array_equal(np.load({:?}), f.get_tensor('i32'))\nprint('same')",
        source.display().to_string(),
        cat.display().to_string()
    );
    let out = std::process::Command::new(common::python())
        .args(["-c", &check])
        .output()
        .unwrap();
    common::assert_success("cat output equals the library's tensor", &out);
}

#[test]
fn safetensors_widen_f32_serves_bfloat16_and_float8_as_float32() {
    let dir = written("st-widen", "st-write");
    for (name, want) in [
        ("model.safetensors", "21 tensors ok, 6 widened"),
        // Every bit pattern of bfloat16 and of each float8 type (NaNs, infinities,
        // subnormals), against ml_dtypes.
        ("allbits.safetensors", "6 tensors ok, 6 widened"),
    ] {
        let source = dir.join(name);
        let out = mount_and_check(&source, &["-o", "widen=f32"], "st-check-widened", &[]);
        assert!(out.contains(want), "{out}");
    }
}

#[test]
fn ls_and_cat_take_the_tree_options_of_the_mount() {
    let dir = written("st-ls-options", "st-write");
    let source = dir.join("model.safetensors");
    let out = common::arrfs()
        .args(["ls", "-R", "-o", "split_names=.,widen=f32"])
        .arg(&source)
        .output()
        .unwrap();
    common::assert_success("arrfs ls -o split_names=.,widen=f32", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.ends_with("model/layers/1/attn/q/weight.npy"))
        .unwrap_or_else(|| panic!("no split name in {text}"));
    assert!(line.contains("<f4") && line.contains("(4, 6)"), "{line}");
    let cat = dir.join("f8.npy");
    let out = common::arrfs()
        .args(["cat", "-o", "widen=f32", "--output"])
        .arg(&cat)
        .arg(&source)
        .arg("model.layers.1.mlp.f8.npy")
        .output()
        .unwrap();
    common::assert_success("arrfs cat -o widen=f32", &out);
    let check = format!(
        "import io, ml_dtypes, numpy as np, safetensors\n\
         info = dict(safetensors.deserialize(open({:?}, 'rb').read()))['model.layers.1.mlp.f8']\n\
         a = np.frombuffer(bytes(info['data']), ml_dtypes.float8_e4m3fn).reshape(info['shape'])\n\
         buf = io.BytesIO(); np.save(buf, a.astype(np.float32))\n\
         assert open({:?}, 'rb').read() == buf.getvalue()\nprint('same')",
        source.display().to_string(),
        cat.display().to_string()
    );
    let out = std::process::Command::new(common::python())
        .args(["-c", &check])
        .output()
        .unwrap();
    common::assert_success("cat -o widen=f32 equals ml_dtypes' astype(float32)", &out);
    // `-o FILE` wrote to FILE before -o took tree options: a usage error that says so.
    let out = common::arrfs()
        .arg("cat")
        .arg(&source)
        .arg("i32.npy")
        .arg("-o")
        .arg(dir.join("x.npy"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--output"), "{err}");
    let out = common::arrfs()
        .args(["ls", "-o", "widen=f16"])
        .arg(&source)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn broken_safetensors_headers_fail_the_mount_with_one_line() {
    let dir = written("st-bad", "st-write-bad");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (name, needle) in [
        ("truncated.safetensors", "truncated"),
        ("lying_length.safetensors", "runs past the end of the file"),
        ("not_object.safetensors", "not a JSON object"),
        ("bad_json.safetensors", "not valid JSON"),
        ("past_end.safetensors", "past the end of the file"),
    ] {
        let line = common::assert_mount_fails(&dir.join(name), &mnt, &["-f"], needle);
        assert!(line.contains(name), "{line}");
    }
}

#[test]
fn safetensors_tensor_that_does_not_fit_is_left_out_and_the_rest_reads() {
    let dir = written("st-skip", "st-write-bad");
    let source = dir.join("wrong_length.safetensors");
    let mount = Mount::new(&source, &[]);
    let out = run_py(
        "checkpoint_cases.py",
        &[OsStr::new("st-check-skipped"), mount.point.as_os_str()],
    );
    assert!(out.contains("the rest reads"), "{out}");
    mount.stop();
}

#[test]
fn safetensors_metadata_in_the_attrs_json_sidecar() {
    let dir = written("st-sidecar", "st-write");
    let source = dir.join("model.safetensors");
    let out = common::arrfs()
        .args(["cat", "--attrs-json"])
        .arg(&source)
        .arg(".attrs.json")
        .output()
        .unwrap();
    common::assert_success("arrfs cat .attrs.json", &out);
    let check = format!(
        "import json, sys\nfrom safetensors import safe_open\n\
         want = safe_open({:?}, 'numpy').metadata()\n\
         got = json.loads(sys.stdin.read())\nassert got == want, (got, want)\nprint('same')",
        source.display().to_string()
    );
    let mut child = std::process::Command::new(common::python())
        .args(["-c", &check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    common::assert_success("sidecar equals safe_open().metadata()", &out);
}

#[test]
fn gguf_tensors_and_metadata_equal_gguf_reader() {
    let dir = written("gguf", "gguf-write");
    // 15 written fields + general.architecture (+ general.alignment).
    for (name, fields) in [("model.gguf", 16), ("aligned.gguf", 17)] {
        let out = mount_and_check(&dir.join(name), &[], "gguf-check", &[]);
        let want = format!("12 tensors, {fields} metadata fields ok");
        assert!(out.contains(&want), "{out}");
    }
}

#[test]
fn gguf_every_quantized_type_is_shown_as_gguf_reader_shows_it() {
    let dir = written("gguf-quants", "gguf-write");
    let out = mount_and_check(&dir.join("allquants.gguf"), &[], "gguf-check", &[]);
    assert!(out.contains(" tensors, 1 metadata fields ok"), "{out}");
}

#[test]
fn gguf_widen_f32_serves_bf16_as_float32() {
    let dir = written("gguf-widen", "gguf-write");
    let source = dir.join("model.gguf");
    let out = mount_and_check(&source, &["-o", "widen=f32"], "gguf-check-widened", &[]);
    assert!(out.contains("12 tensors ok, 1 widened"), "{out}");
}

#[test]
fn gguf_split_names_makes_directories() {
    let dir = written("gguf-split", "gguf-write");
    let source = dir.join("model.gguf");
    let out = mount_and_check(&source, &["-o", "split_names=."], "gguf-check", &["."]);
    assert!(out.contains("12 tensors"), "{out}");
}

#[test]
fn broken_gguf_fails_the_mount_with_one_line() {
    let dir = written("gguf-bad", "gguf-write");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bytes = std::fs::read(dir.join("model.gguf")).unwrap();
    // Cut inside the tensor data, inside the metadata, and a count that lies.
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "cut_data.gguf",
            bytes[..bytes.len() - 100].to_vec(),
            "truncated",
        ),
        ("cut_header.gguf", bytes[..200].to_vec(), "truncated"),
        (
            "big_count.gguf",
            {
                let mut b = bytes.clone();
                b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            "cannot fit in the file",
        ),
        (
            "version_1.gguf",
            {
                let mut b = bytes.clone();
                b[4..8].copy_from_slice(&1u32.to_le_bytes());
                b
            },
            "version 1",
        ),
    ];
    for (name, data, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        let line = common::assert_mount_fails(&path, &mnt, &["-f"], needle);
        assert!(line.contains(name), "{line}");
    }
}

fn torch_fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch")
        .join(name)
}

fn check_torch(name: &str) -> String {
    let fixture = torch_fixture(name);
    let mount = Mount::new(&fixture, &[]);
    let out = run_py(
        "checkpoint_cases.py",
        &[
            OsStr::new("torch-check"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    mount.stop();
    out
}

#[test]
fn torch_state_dict_equals_what_torch_loads() {
    let out = check_torch("state_dict.pt");
    assert!(out.contains("10 files ok"), "{out}");
}

#[test]
fn torch_optimizer_state_and_python_values_follow_the_pickle_layout() {
    // 10 model tensors, Adam's state, param_groups' numbers and bools, epoch and loss.
    let out = check_torch("optimizer.pt");
    assert!(out.contains("35 files ok"), "{out}");
}

#[test]
fn torch_views_with_offsets_and_strides_read_as_tensor_numpy() {
    let out = check_torch("views.pt");
    assert!(out.contains("12 files ok"), "{out}");
}

#[test]
fn torch_shared_storages_give_each_tensor_its_file() {
    let out = check_torch("shared.pt");
    assert!(out.contains("7 files ok"), "{out}");
}

#[test]
fn torch_dtypes_bf16_f16_ints_bool_complex_float8() {
    let out = check_torch("dtypes.pt");
    assert!(out.contains("20 files ok"), "{out}");
}

#[test]
fn torch_widen_f32_serves_bf16_and_float8_as_float32() {
    let fixture = torch_fixture("dtypes.pt");
    let out = mount_and_check(&fixture, &["-o", "widen=f32"], "torch-check-widened", &[]);
    assert!(out.contains("20 files ok, 4 widened"), "{out}");
}

#[test]
fn torch_hostile_checkpoint_runs_nothing_and_the_rest_is_shown() {
    let marker = Path::new("/tmp/arrfs-torch-pwned");
    let _ = std::fs::remove_file(marker);
    let fixture = torch_fixture("hostile.pt");
    let mount = Mount::new(&fixture, &[]);
    let out = run_py(
        "checkpoint_cases.py",
        &[
            OsStr::new("torch-check"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("2 files ok"), "{out}");
    let skipped = xattr(&mount.point, "user.arrfs.skipped");
    for needle in [
        "system: global posix.system is not on the allow-list",
        "eval: global __builtin__.eval is not on the allow-list",
        "nested: global torch.serialization.load is not on the allow-list",
        "copyreg: global commands.Popen is not on the allow-list",
    ] {
        assert!(skipped.contains(needle), "{needle:?} not in {skipped}");
    }
    mount.stop();
    assert!(!marker.exists(), "os.system ran");
}

#[test]
fn torch_hostile_objects_inside_tensor_arguments_run_nothing() {
    // Hooks, metadata and parameter state holding eval / os.system / torch.load and a nested
    // pickle run by pickle.loads: those tensors are shown; a tensor whose storage offset is
    // such a call is left out; nothing runs.
    let marker = Path::new("/tmp/arrfs-torch-pwned");
    let _ = std::fs::remove_file(marker);
    let fixture = torch_fixture("hostile_metadata.pt");
    let mount = Mount::new(&fixture, &[]);
    let out = run_py(
        "checkpoint_cases.py",
        &[
            OsStr::new("torch-check"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("3 files ok"), "{out}");
    let skipped = xattr(&mount.point, "user.arrfs.skipped");
    assert!(
        skipped.contains("offset: global pickle.loads is not on the allow-list"),
        "{skipped}"
    );
    mount.stop();
    assert!(!marker.exists(), "a hostile global ran");
}

#[test]
fn torch_legacy_checkpoint_is_refused_with_one_line() {
    let dir = TempDir::new("torch-legacy");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    common::assert_mount_fails(
        &torch_fixture("legacy.pt"),
        &mnt,
        &["-f"],
        "legacy.pt: legacy PyTorch checkpoint",
    );
}

/// The value of extended attribute `name` of `path`, as text.
fn xattr(path: &Path, name: &str) -> String {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    common::assert_success("getfattr", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn torch_missing_storage_leaves_its_tensors_out_and_the_rest_reads() {
    let dir = TempDir::new("torch-missing");
    let copy = dir.join("views.pt");
    let fixture = torch_fixture("views.pt");
    run_py(
        "checkpoint_cases.py",
        &[
            OsStr::new("torch-write-missing"),
            fixture.as_os_str(),
            copy.as_os_str(),
        ],
    );
    std::fs::copy(
        torch_fixture("views.expected.zip"),
        dir.join("views.expected.zip"),
    )
    .unwrap();
    let mount = Mount::new(&copy, &[]);
    let out = run_py(
        "checkpoint_cases.py",
        &[
            OsStr::new("torch-check-missing"),
            copy.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("left out"), "{out}");
    mount.stop();
}

#[test]
fn truncated_torch_checkpoint_fails_the_mount_with_one_line() {
    let dir = TempDir::new("torch-truncated");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bytes = std::fs::read(torch_fixture("views.pt")).unwrap();
    let cut = dir.join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    common::assert_mount_fails(&cut, &mnt, &["-f"], "cut.pt");
}
