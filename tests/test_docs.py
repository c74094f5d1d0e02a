"""The documentation: its examples run, its reference pages are complete,
and the site builds with warnings as errors.

Every fenced ```python block of README.md and docs/*.md is a program of its
own: it runs in a fresh interpreter, in an empty directory, once on each
pump backend (FIBERS_BACKEND), and must exit 0 with nothing on stderr (so
an exception a fiber logged fails it too).  An HTML comment on the line
before a fence changes that:

    <!-- no-run: REASON -->   not run (the reason is required)
    <!-- file: NAME -->       not run: written as NAME into the directory
                              of every example of that page; a setup.py
                              among them is run (build_ext --inplace) first
    <!-- needs: tls-certs --> cert.pem and key.pem (a certificate for
                              localhost, 127.0.0.1 and ::1) and ca.pem, the
                              authority that signed it, are in the directory
    <!-- needs: postgresql --> PGHOST, PGPORT and PGUSER name a throwaway
                              PostgreSQL server (the `pg` fixture)
    <!-- output: WHAT -->     on a plain fence right after an example: what
                              the example prints, exactly

```toml blocks are fibers-shadow's settings files: they must load.
"""
import dataclasses
import os
import re
import shutil
import subprocess
import sys

import pytest

import capabilities
from iohelp import skip_unless_backend_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = ["README.md"] + sorted(
    os.path.join("docs", n) for n in os.listdir(DOCS) if n.endswith(".md"))
# A hang guard for one example, far above any example's real duration.
EXAMPLE_LIMIT = 120

_FENCE = re.compile(r"^( *)```(\w*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*([\w-]+)\s*:\s*(.*?)\s*-->\s*$")


@dataclasses.dataclass
class Block:
    page: str           # relative to the repository
    line: int           # of the opening fence, from 1
    lang: str
    code: str
    markers: dict

    @property
    def id(self):
        return f"{self.page}:{self.line}"


def _blocks(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2), i
        markers, j = {}, i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and _MARKER.match(lines[j]):
            key, value = _MARKER.match(lines[j]).groups()
            markers[key] = value
            j -= 1
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        assert i < len(lines), f"{page}:{start + 1}: unclosed fence"
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n",
                         markers))
        i += 1
    return out


BLOCKS = [b for page in PAGES for b in _blocks(page)]
EXAMPLES = [b for b in BLOCKS if b.lang == "python"
            and "no-run" not in b.markers and "file" not in b.markers]
# example -> the output block that follows it
OUTPUTS = {a.id: b for a, b in zip(BLOCKS, BLOCKS[1:])
           if "output" in b.markers and a.page == b.page}


def test_every_example_that_does_not_run_says_why():
    for b in BLOCKS:
        assert b.markers.get("no-run", "x").strip(), \
            f"{b.id}: no-run needs a reason"
        unknown = set(b.markers) - {"no-run", "file", "needs", "output"}
        assert not unknown, f"{b.id}: unknown marker(s) {unknown}"
        assert b.markers.get("needs") in (None, "tls-certs", "postgresql"), \
            f"{b.id}: unknown need {b.markers['needs']!r}"
    # Every page has examples that run, apart from the reference pages.
    assert EXAMPLES
    for b in BLOCKS:
        if "output" in b.markers:
            assert any(o is b for o in OUTPUTS.values()), \
                f"{b.id}: an output block must follow an example"


# ---- running the examples -----------------------------------------------------

@pytest.fixture(scope="session")
def page_files(tmp_path_factory):
    """page -> a directory holding its `file:` blocks, built; made once."""
    made = {}

    def get(page):
        if page not in made:
            d = tmp_path_factory.mktemp("docfiles")
            for b in _blocks(page):
                if "file" in b.markers:
                    (d / b.markers["file"]).write_text(b.code)
            if (d / "setup.py").exists():
                r = subprocess.run(
                    [sys.executable, "setup.py", "-q", "build_ext",
                     "--inplace"], cwd=d, capture_output=True, text=True,
                    timeout=600)
                assert r.returncode == 0, \
                    f"{page}: building its example failed:\n{r.stderr}"
            made[page] = d
        return made[page]
    return get


def _tls_certs(directory):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))


@pytest.mark.parametrize("backend_name", ["io_uring", "epoll"])
@pytest.mark.parametrize("block", EXAMPLES, ids=[b.id for b in EXAMPLES])
def test_example_runs(block, backend_name, tmp_path, page_files, request):
    skip_unless_backend_runs(backend_name)
    shutil.copytree(page_files(block.page), tmp_path, dirs_exist_ok=True)
    env = dict(os.environ, FIBERS_BACKEND=backend_name)
    need = block.markers.get("needs")
    if need == "tls-certs":
        _tls_certs(tmp_path)
    elif need == "postgresql":
        pg = request.getfixturevalue("pg")
        env.update(PGHOST=pg.host, PGPORT=str(pg.port), PGUSER="postgres")
    script = tmp_path / "example.py"
    script.write_text(block.code)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=EXAMPLE_LIMIT)
    assert r.returncode == 0 and r.stderr == "", (
        f"{block.id} on {backend_name}: exit {r.returncode}\n"
        f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
    if block.id in OUTPUTS:
        assert r.stdout == OUTPUTS[block.id].code, \
            f"{block.id} on {backend_name}: not the output the page shows"


def test_settings_files_load():
    from fibers.shadow import config

    tomls = [b for b in BLOCKS if b.lang == "toml"]
    assert tomls, "docs/shadow.md shows a settings file"
    for b in tomls:
        config.from_dict(config._toml.loads(b.code))


# ---- reference pages against the code -----------------------------------------

def _read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def test_shadow_page_shows_every_setting():
    # The full settings file on the page has every key there is: each
    # field of Settings but the two that only flags set.
    from fibers.shadow import config

    full = [b for b in BLOCKS if b.page == "docs/shadow.md"
            and b.lang == "toml" and b.markers.get("no-run") is None]
    data = config._toml.loads(full[0].code)
    keys = set(data) - {"rules", "ship"}
    keys |= set(data.get("rules", {}))
    keys |= {"ship_window" if k == "window" else k
             for k in data.get("ship", {})}
    fields = {f.name for f in dataclasses.fields(config.Settings)}
    assert keys == fields - {"ui", "config_file"}


def test_shadow_page_names_every_option_and_command():
    from fibers.shadow import __main__ as cli

    page = _read("docs/shadow.md")
    for action in cli._parser()._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                assert f"`{opt}" in page, f"{opt} is not on docs/shadow.md"
    usage = subprocess.run([sys.executable, "-m", "fibers.shadow", "ctl",
                            "--help"], capture_output=True, text=True,
                           check=True).stdout
    commands = re.search(r"\{([\w,]+)\}", usage).group(1).split(",")
    assert len(commands) >= 4
    for c in commands:
        assert f"`fibers-shadow ctl {c}" in page, \
            f"ctl {c} is not on docs/shadow.md"


def test_layout_names_every_source_file():
    page = _read("docs/layout.md")
    missing = []
    for top, exts in (("fibers", (".py", ".pyx", ".pxi", ".pxd", ".pyi",
                                  ".h")),
                      ("csrc", (".c", ".h"))):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            for n in names:
                rel = os.path.relpath(os.path.join(d, n), ROOT)
                if n.endswith(exts) and f"`{rel}`" not in page:
                    missing.append(rel)
    assert not missing, f"docs/layout.md does not name {missing}"


def test_socket_differences_page_is_current():
    r = subprocess.run([sys.executable,
                        os.path.join(ROOT, "tools", "gen_socket_differences.py"),
                        "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_site_builds_with_warnings_as_errors(tmp_path):
    mkdocs = os.path.join(os.path.dirname(sys.executable), "mkdocs")
    if not os.path.exists(mkdocs):
        capabilities.skip("mkdocs", "mkdocs is not installed here (make "
                          "test and make docs install it)")
    r = subprocess.run([mkdocs, "build", "--strict", "--site-dir",
                        str(tmp_path / "site")], cwd=ROOT,
                       env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "socket-differences.html").exists()
