"""Where the IDX-format datasets come from, and the SHA-256 of every published source file.

A source file is accepted when the SHA-256 of the file as found matches the published
compressed file, or when the SHA-256 of its decompressed IDX content matches. The second rule
admits repackaged copies whose gzip header differs but whose content is identical, such as
Debian's ``dataset-fashion-mnist`` (its ``.gz`` files carry no file name and a different
timestamp, so their own hashes differ from the upstream ones).

Provenance of the values (checked against public listings while writing this module):

* MNIST ``.gz``: TFDS's ``url_checksums/mnist.txt`` (the CVDF mirror), matching several
  independent listings; decompressed: the widely published IDX hashes (several sources).
* Fashion-MNIST ``.gz``: TFDS's ``url_checksums/fashion_mnist.txt`` and independent listings
  that pair them with the publisher's MD5s; decompressed: computed from Debian's files and
  identical to independently published "raw" hashes derived from the publisher's archives.
* KMNIST ``.gz``: TFDS's ``url_checksums/kmnist.txt`` and several independent listings.
* EMNIST ``gzip.zip``: TFDS's ``url_checksums/emnist.txt`` and many independent listings.
  Balanced members: train files match two independent listings; the two test files were found
  in a single public listing only. Members read from the verified zip are also CRC-checked.
  ByClass members: no per-file hashes are published, so they are accepted only as members of
  the verified ``gzip.zip`` (its SHA-256 covers every byte of them; the zip's CRC-32 catches a
  bad extraction), never as loose files.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class SourceFile:
    """One published file; ``filename`` is its name in the original distribution."""

    key: str  # one of SPLIT_KEYS
    filename: str
    sha256_gz: tuple[str, ...]
    sha256_raw: tuple[str, ...] = ()

    @property
    def raw_name(self) -> str:
        return self.filename.removesuffix(".gz")

    @property
    def archive_only(self) -> bool:
        """No hash of its own: trusted only as a member of its spec's verified archive."""
        return not (self.sha256_gz or self.sha256_raw)


@dataclass(frozen=True)
class Archive:
    """A zip holding the source files under ``member_dir`` (EMNIST ships this way)."""

    filename: str
    url: str
    sha256: str
    size: int
    member_dir: str


@dataclass(frozen=True)
class IdxSpec:
    """Everything needed to find, verify and build one IDX-format dataset."""

    name: str
    title: str
    homepage: str
    files: tuple[SourceFile, ...]
    num_examples: dict[str, int]  # split -> count
    class_names: tuple[str, ...]
    base_url: str | None = None  # per-file downloads: base_url + filename
    archive: Archive | None = None  # or one archive holding every file
    system_dirs: tuple[str, ...] = ()  # searched automatically, e.g. a Debian package
    offline_hint: str = ""
    image_shape: tuple[int, int, int] = (28, 28, 1)
    notes: str = ""

    @property
    def archive_only(self) -> bool:
        """Its files can only be verified through the archive that holds them."""
        return any(f.archive_only for f in self.files)

    def file(self, key: str) -> SourceFile:
        return next(f for f in self.files if f.key == key)

    def urls(self) -> dict[str, str]:
        """What a download fetches: one URL per file, or the single archive."""
        if self.archive is not None:
            return {"archive": self.archive.url}
        assert self.base_url is not None
        return {f.key: self.base_url + f.filename for f in self.files}


def _files(names: tuple[str, str, str, str], gz: tuple[str, str, str, str],
           raw: tuple[str, str, str, str] | None = None) -> tuple[SourceFile, ...]:
    raw = raw or ("", "", "", "")
    return tuple(
        SourceFile(key, name, (g,), (r,) if r else ())
        for key, name, g, r in zip(SPLIT_KEYS, names, gz, raw, strict=True)
    )


_MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

MNIST = IdxSpec(
    name="mnist",
    title="MNIST handwritten digits",
    homepage="http://yann.lecun.com/exdb/mnist/",
    base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    files=_files(
        _MNIST_NAMES,
        gz=("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        raw=("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
             "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
             "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
    num_examples={"train": 60000, "test": 10000},
    class_names=tuple(str(i) for i in range(10)),
)

FASHION_MNIST = IdxSpec(
    name="fashion_mnist",
    title="Fashion-MNIST (Zalando article images)",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files=_files(
        _MNIST_NAMES,
        gz=("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        raw=("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
             "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
             "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
             "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    num_examples={"train": 60000, "test": 10000},
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    offline_hint="On Debian/Ubuntu: apt-get install dataset-fashion-mnist (found automatically).",
)

KMNIST = IdxSpec(
    name="kmnist",
    title="Kuzushiji-MNIST (cursive Japanese hiragana)",
    homepage="https://github.com/rois-codh/kmnist",
    base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    files=_files(
        _MNIST_NAMES,
        gz=("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    ),
    num_examples={"train": 60000, "test": 10000},
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
)

EMNIST = IdxSpec(
    name="emnist",
    title="EMNIST Balanced (handwritten digits and letters, 47 classes)",
    homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
    archive=Archive(
        filename="gzip.zip",
        url="https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
        sha256="fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
        size=561753746,
        member_dir="gzip/",
    ),
    files=_files(
        ("emnist-balanced-train-images-idx3-ubyte.gz", "emnist-balanced-train-labels-idx1-ubyte.gz",
         "emnist-balanced-test-images-idx3-ubyte.gz", "emnist-balanced-test-labels-idx1-ubyte.gz"),
        gz=("74295e75e4e9fa2c102147460ee7eb763653d5132d883a84fb88932bfb8d2db4",
            "b46d41e5156a0a8aaaa4d18979fdd1588850fa8571018acffd5d93b325a7d6ed",
            "117fc12b015e37ea98bfb2cbba3f77c3782c056cdbd219b87abfc8661d7135db",
            "a67cac948379b67270b9a4d0a01c8ec661598accf2f2b1964340b7c83cb175cd"),
    ),
    num_examples={"train": 112800, "test": 18800},
    class_names=tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + tuple("abdefghnqrt"),
    notes="Images are stored as published: transposed relative to the usual orientation.",
)

# TFDS's default EMNIST configuration, which the official VSML code reads (tfds 'emnist'):
# the same verified archive as Balanced, its byclass members (counts as TFDS lists them).
EMNIST_BYCLASS = IdxSpec(
    name="emnist_byclass",
    title="EMNIST ByClass (handwritten digits and letters, 62 unbalanced classes)",
    homepage=EMNIST.homepage,
    archive=EMNIST.archive,
    files=tuple(
        SourceFile(key, f"emnist-byclass-{key.replace('_', '-')}-idx{3 if 'images' in key else 1}"
                        "-ubyte.gz", ())
        for key in SPLIT_KEYS
    ),
    num_examples={"train": 697932, "test": 116323},
    class_names=tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    notes=EMNIST.notes,
)

IDX_SPECS: dict[str, IdxSpec] = {s.name: s for s in (MNIST, FASHION_MNIST, KMNIST, EMNIST,
                                                      EMNIST_BYCLASS)}


def identify(sha256: str) -> str | None:
    """Name the published file a hash belongs to, to explain a mix-up of similar files."""
    for spec in IDX_SPECS.values():
        if spec.archive is not None and sha256 == spec.archive.sha256:
            return f"{spec.name}'s {spec.archive.filename}"
        for f in spec.files:
            if sha256 in f.sha256_gz:
                return f"{spec.name}'s {f.filename}"
            if sha256 in f.sha256_raw:
                return f"{spec.name}'s {f.raw_name}"
    return None
