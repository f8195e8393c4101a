"""The MLflow pyfunc form of a CPL model, logged as code with every registered version.

    mlflow.pyfunc.load_model("models:/cpl-restore/<v>").predict(x)

``x`` is a float32 (N, 3, H, W) array in [0, 1], any H and W; the result has the same shape. Padding,
cropping and tiling for large images happen inside. MLflow runs this file when it loads the model
(models-from-code): no pickled class, so loading does not depend on where our classes live.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

TILE = 512


class Restorer(PythonModel):
    def load_context(self, context):
        from cpl_model import load_checkpoint

        self.model, _ = load_checkpoint(context.artifacts["weights"])

    # The hint (an array, from which MLflow infers nothing) keeps MLflow from asking for one each time it
    # logs or loads the model; the signature logged with the model describes the tensor.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from cpl_model import restore

        x = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a float32 (N, 3, H, W) array, got shape {tuple(x.shape)}")
        with torch.inference_mode():
            return restore(self.model, x, tile=TILE).numpy()


mlflow.models.set_model(Restorer())
