"""captcha-ocr: train, validate, tune and export CTC models that read text captchas."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="captcha-ocr",
    version="0.1.0",
    description=(
        "A TFX-style pipeline (Beam ExampleGen, TFDV, Keras Tuner, CNN+BiLSTM+CTC) that "
        "turns a folder of labelled captcha images into a TF Serving model."
    ),
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*"]),
    # the shipped model (captcha-ocr pretrain): installed with the package, never downloaded
    package_data={"components": ["pretrained/*"]},
    install_requires=[
        "tensorflow==2.16.2",
        "keras>=3.0,<3.16",
        "keras-tuner[bayesian]==1.4.8",  # scipy + scikit-learn for --algorithm bayesian
        "tensorflow-data-validation==1.16.1",
        "tfx-bsl==1.16.1",
        "tensorflow-metadata==1.16.1",
        "tensorflow-serving-api==2.16.1",
        "apache-beam[gcp]==2.61.0",
        "pyarrow==10.0.1",
        "numpy<2",
        "pandas<2",
        "pillow",
        "captcha==0.7.1",
        "matplotlib",
        "requests",
        "rich",
    ],
    # selenium: the review page test; gcp-storage-emulator: a local GCS for the gs:// tests
    extras_require={"test": ["pytest", "ruff", "selenium", "gcp-storage-emulator"]},
    entry_points={"console_scripts": ["captcha-ocr=pipeline.cli:main"]},
)
