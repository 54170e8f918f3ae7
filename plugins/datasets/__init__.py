"""Built-in datasets (registration only; torch-free)."""
from infovae import Option, hookimpl


@hookimpl
def register_datasets(register):
    seed = Option("seed", int, 0, "seed of the random split (and of any random binarization)")
    register(
        "digits",
        "infovae.plugins.datasets.digits:Digits",
        summary="scikit-learn's 1797 8x8 digits, embedded (no files); binary (value >= threshold) or 8-bit gray.",
        options=[
            Option("kind", str, "binary", "binary (value >= threshold) or gray8 (0..16 scaled to 0..255)", choices=("binary", "gray8")),
            Option("threshold", int, 8, "binary pixel = 1 where the 0..16 value is >= this", minimum=1, maximum=16),
            Option("valid_size", int, 200, "examples in the valid split", minimum=0),
            Option("test_size", int, 200, "examples in the test split", minimum=0),
            seed,
        ],
    )
    register(
        "binarized-mnist",
        "infovae.plugins.datasets.binarized_mnist:BinarizedMNIST",
        summary="Standard binarized MNIST 50k/10k/10k from an .npz (x_train, x_valid, x_test) or the classic .amat files.",
        options=[
            Option("path", str, "", "an .npz file, or a directory with binarized_mnist_{train,valid,test}.amat"),
        ],
    )
    register(
        "mnist",
        "infovae.plugins.datasets.mnist:MNIST",
        summary="MNIST from the IDX files (optionally .gz): 8-bit gray, or binarized statically, dynamically or by threshold.",
        options=[
            Option("path", str, "", "directory with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"),
            Option(
                "binarize", str, "static",
                "none (gray8); static (one seeded Bernoulli draw, p=v/255); dynamic (fresh train draw per epoch); threshold (v>=128)",
                choices=("none", "static", "dynamic", "threshold"),
            ),
            Option("valid_size", int, 10000, "training images carved out (seeded) as the valid split", minimum=0),
            seed,
        ],
    )
    register(
        "cifar10",
        "infovae.plugins.datasets.cifar10:CIFAR10",
        summary="CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin), 8-bit RGB 32x32; the pickle version is refused.",
        options=[
            Option("path", str, "", "directory with data_batch_1.bin .. data_batch_5.bin and test_batch.bin"),
            Option("valid_size", int, 5000, "training images carved out (seeded) as the valid split", minimum=0),
            seed,
        ],
    )
    register(
        "image-folder",
        "infovae.plugins.datasets.image_folder:ImageFolder",
        summary="PNG/JPEG files under a folder (recursive) via Pillow; classes from immediate sub-folder names.",
        options=[
            Option("path", str, "", "directory of .png/.jpg/.jpeg images, optionally one sub-folder per class"),
            Option("mode", str, "gray8", "gray8, rgb8, or binary (gray >= threshold)", choices=("gray8", "rgb8", "binary")),
            Option("threshold", int, 128, "binary mode: pixel = 1 where gray >= this", minimum=1, maximum=255),
            Option("size", str, "", "resize every image to HxW (or N for NxN); empty: all images must share one size"),
            Option("valid_fraction", float, 0.1, "fraction of the images in the valid split", minimum=0.0, maximum=0.99),
            Option("test_fraction", float, 0.1, "fraction of the images in the test split", minimum=0.0, maximum=0.99),
            seed,
        ],
    )
    register(
        "array",
        "infovae.plugins.datasets.array:ArrayDataset",
        summary="Memory-mapped uint8 .npy (N,C,H,W or N,H,W), or a directory of .npy shards with manifest.json ('infovae data convert'); for data larger than memory.",
        options=[
            Option("path", str, "", "a uint8 .npy file, or a directory written by 'infovae data convert'"),
            Option("kind", str, "auto", "binary, gray8 or rgb8; auto: the manifest's, or gray8/rgb8 by channels", choices=("auto", "binary", "gray8", "rgb8")),
            Option("valid_size", int, 0, "single .npy file: examples carved out (seeded) as the valid split", minimum=0),
            Option("test_size", int, 0, "single .npy file: examples carved out (seeded) as the test split", minimum=0),
            seed,
        ],
    )
