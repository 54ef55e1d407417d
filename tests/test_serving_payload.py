"""The README's "Serve" section, checked against a real export's signature."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers import PROJECT_ROOT
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components.predict import SERVING_SIGNATURE, resolve_saved_model

README_SECTION = "Serve"
# JSON types of TF Serving's REST answer for each output dtype.
JSON_TYPES = {tf.string: str, tf.float32: float, tf.bool: bool}


def serve_section() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    return text.split(f"\n## {README_SECTION}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", serve_section(), re.S)


@pytest.fixture(scope="module")
def signature(exported_model_base):
    loaded = tf.saved_model.load(resolve_saved_model(str(exported_model_base)))
    yield loaded.signatures[SERVING_SIGNATURE]


def test_readme_rest_request_runs_through_the_signature(signature):
    request, response = (json.loads(block) for block in code_blocks("json"))
    inputs = signature.structured_input_signature[1]
    instances = request["instances"]

    assert request["signature_name"] == SERVING_SIGNATURE
    for instance in instances:
        assert set(instance) == set(inputs)
        for name, value in instance.items():
            # TF Serving turns {"b64": ...} into bytes only for string inputs named *_bytes.
            assert set(value) == {"b64"} and name.endswith("_bytes")
            assert inputs[name].dtype == tf.string and inputs[name].shape.as_list() == [None]
    batch = {
        name: tf.constant([base64.b64decode(i[name]["b64"], validate=True) for i in instances])
        for name in inputs
    }
    outputs = signature(**batch)
    assert outputs["valid"].numpy().all()

    (prediction,) = response["predictions"]
    assert set(prediction) == set(signature.structured_outputs)
    for name, spec in signature.structured_outputs.items():
        assert isinstance(prediction[name], JSON_TYPES[spec.dtype]), name


def test_readme_commands_name_the_same_model():
    section = serve_section()
    name = re.search(r"-e MODEL_NAME=(\w+)", section).group(1)
    base_path = re.search(r"target=(\S+?),?\s", section).group(1)
    assert re.search(r"-e MODEL_BASE_PATH=(\S+)", section).group(1) + f"/{name}" == base_path
    assert f'source="$PWD/export/{name}"' in section
    assert f"--export-dir export \\\n    --model-name {name}" in section
    assert f"localhost:8501/v1/models/{name}:predict" in section
    assert f'request.model_spec.name = "{name}"' in section


class LocalPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's Predict RPC, answered by the export's signature on this machine."""

    def __init__(self, signature) -> None:
        self.signature = signature
        self.requests: list[predict_pb2.PredictRequest] = []

    def Predict(self, request, context):  # the gRPC method's name
        self.requests.append(request)
        inputs = {
            name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()
        }
        response = predict_pb2.PredictResponse(model_spec=request.model_spec)
        for name, value in self.signature(**inputs).items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_readme_grpc_snippet_reads_through_a_prediction_service(signature, synthetic_images):
    (snippet,) = code_blocks("python")
    image = sorted(synthetic_images.glob("*.png"))[0]
    service = LocalPredictionService(signature)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        namespace: dict = {}
        with contextlib.redirect_stdout(io.StringIO()):
            exec(
                snippet.replace("localhost:8500", f"127.0.0.1:{port}").replace(
                    '"226md.png"', repr(str(image))
                ),
                namespace,
            )
    finally:
        server.stop(None)

    (request,) = service.requests
    assert (request.model_spec.name, request.model_spec.signature_name) == (
        "captcha",
        SERVING_SIGNATURE,
    )
    expected = signature(image_bytes=tf.constant([image.read_bytes()]))
    assert namespace["texts"] == [t.decode() for t in expected["text"].numpy()]
    np.testing.assert_allclose(namespace["confidences"], expected["confidence"].numpy())
