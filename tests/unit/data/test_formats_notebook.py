"""notebooks/data_tour.ipynb executes headless on a micro build (nbclient, venv kernel)."""

import os
import sys

import nbclient
import nbformat

from tests.unit.data import test_formats_fixtures as fx

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "..", "notebooks",
                        "data_tour.ipynb")


def test_data_tour_notebook_executes(monkeypatch):
  fx.micro_build()  # the notebook reuses this build (and trains its tokenizer)
  monkeypatch.setenv("LIVEINTERP_DATA_DIR", fx.session_root())
  monkeypatch.setenv("LIVEINTERP_PAIR", "zh-en")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # kernel "python3" resolves to this interpreter (jupyter_client maps `python` to
  # sys.executable), i.e. the venv.
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(os.path.abspath(NOTEBOOK))}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  kinds = {k for o in outputs for k in o.get("data", {})}
  assert "image/png" in kinds  # the waveform/mel figure
  assert "text/html" in kinds  # the Audio widgets
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "chunk  0" in text and "tokens," in text and sys.executable
