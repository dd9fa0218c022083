"""The directory source: files added, edited and removed reach the store; broken files are reported
and never hide the valid ones."""

from istiod_lite.model.store import ConfigStore
from istiod_lite.sources.files import DirectorySource

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.example.com]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
"""


def _hosts(store):
    return sorted(s.hostname for s in store.snapshot().services)


def test_add_edit_remove(tmp_path):
    changes = []
    store = ConfigStore(on_change=changes.append)
    src = DirectorySource(tmp_path)
    (tmp_path / "a.yaml").write_text(SE.format(name="a"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(SE.format(name="b"))
    (tmp_path / "notes.txt").write_text("ignored")
    assert src.scan(store) == 2
    assert _hosts(store) == ["a.example.com", "b.example.com"]
    assert src.scan(store) == 0  # nothing changed, nothing reloaded

    (tmp_path / "a.yaml").write_text(SE.format(name="a") + "---\n" + SE.format(name="c"))
    src.scan(store)
    assert _hosts(store) == ["a.example.com", "b.example.com", "c.example.com"]
    (tmp_path / "sub" / "b.yml").unlink()
    src.scan(store)
    assert _hosts(store) == ["a.example.com", "c.example.com"]
    assert changes, "the store reports changed keys"


def test_broken_file_reported_others_served(tmp_path):
    store = ConfigStore()
    src = DirectorySource(tmp_path)
    (tmp_path / "good.yaml").write_text(SE.format(name="good"))
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: [\n")
    src.scan(store)
    snap = store.snapshot()
    assert [s.hostname for s in snap.services] == ["good.example.com"]
    (issue,) = snap.issues
    assert issue.file.endswith("bad.yaml")
    # fixing the file clears the issue
    (tmp_path / "bad.yaml").write_text(SE.format(name="fixed"))
    src.scan(store)
    assert store.snapshot().issues == ()
