"""From stored images to the model's input, inside the compiled step: pixels, per-channel normalization, and the
training batches' augmentation (random crop of the zero-padded image, horizontal flip).

* Pixels: uint8 becomes Keras' float32 u / 255 by table (``PIXELS``); float32 images (a user's own arrays) are
  taken as they are. The dtype decides when the step is traced, so neither costs a branch.
* ``normalize = "per_channel"``: x <- (x - mean_c) / std_c, with the mean and (population) standard deviation of
  each channel of the training split's pixels, computed once on the host in float64 and kept as float32
  (``preprocessing``); training and evaluation alike. Grayscale (N, H, W) images are one channel.
* ``augment``, training batches only, per image and independently: "crop4" pads H and W with 4 zeros on each
  side and takes the H x W window at a random offset (0..8 down, 0..8 across); "flip" mirrors W with probability
  1/2. The padding comes after normalization, as in the usual CIFAR recipe: a padded pixel is the channel's mean
  when normalized, black when not.
* The draws are a pure function of the seed's key, the epoch and the step (``step_key``): a resumed run draws
  exactly what the uninterrupted one did, and ``normalize = "none"`` with no ``augment`` adds no op to the step.
"""

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATIONS = ("none", "per_channel")
AUGMENTATIONS = ("crop4", "flip")  # the order they are applied in, whatever order a study lists them in
PAD = 4

# Keras' pixels, the float32 nearest to u / 255. XLA turns a division by 255 into a product with float32(1/255),
# which is one ulp off for 126 of the 256 values: enough for a ReLU near its kink to switch a step earlier.
PIXELS = (np.arange(256) / 255.0).astype(np.float32)

# fold_in(rng, epoch) is the epoch's shuffle (``train.loop.shuffled_batches``); epochs stay below 100,000
# (``experiments.config``), so the keys of these streams, folded from this one, never meet a shuffle's.
AUGMENT_STREAM = 2**32 - 1
LAYER_STREAM = 2**32 - 2  # the random layers' (dropout): ``train.loop.layer_keys``
STATS_CHUNK = 1024  # images per host pass of ``preprocessing``: bounded memory on any training set


def scale_pixels(images):
    """uint8 images as Keras' float32 pixels; float images as float32, unscaled."""
    if images.dtype == np.uint8:
        return jnp.asarray(PIXELS)[images]
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    return jnp.asarray(images, jnp.float32)


def channels(images) -> int:
    """Channels of (N, H, W, C) images; any other shape (grayscale (N, H, W)) is one."""
    return images.shape[-1] if images.ndim == 4 else 1


def _moments(images) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the float64 mean and population std of ``scale_pixels(images)``: from each channel's histogram
    of the 256 values for uint8 (exact), in two passes over float64 chunks otherwise."""
    c, n = channels(images), images.size // channels(images)
    rows = [images[i:i + STATS_CHUNK].reshape(-1, c) for i in range(0, len(images), STATS_CHUNK)]
    if images.dtype == np.uint8:
        counts = sum(np.bincount((chunk + 256 * np.arange(c)).ravel(), minlength=256 * c).reshape(c, 256)
                     for chunk in rows)  # the addition widens uint8 to int64: no wrap
        values = PIXELS.astype(np.float64)
        mean = counts @ values / n
        return mean, np.sqrt(np.sum(counts * (values - mean[:, None]) ** 2, axis=1) / n)
    mean = sum(np.sum(chunk.astype(np.float64), axis=0) for chunk in rows) / n
    return mean, np.sqrt(sum(np.sum((chunk.astype(np.float64) - mean) ** 2, axis=0) for chunk in rows) / n)


def preprocessing(images_train, normalize: str) -> dict:
    """What turns stored images into the model's input, as an export must repeat it: x * scale, then
    (x - mean) / std per channel when ``normalize`` is "per_channel" (else ``mean`` and ``std`` are None).
    ``scale`` is 1/255 for uint8 images (``PIXELS``), 1.0 for float ones. Only the training split goes in:
    validation and test are normalized with the training statistics."""
    scale = 1 / 255 if images_train.dtype == np.uint8 else 1.0
    if normalize == "none":
        return {"scale": scale, "mean": None, "std": None}
    mean, std = (np.asarray(m, np.float32) for m in _moments(np.asarray(images_train)))
    std[std == 0] = 1  # a constant channel: dividing by 0 would make it NaN; by 1 it is only centred (all zeros)
    return {"scale": scale, "mean": mean.tolist(), "std": std.tolist()}


def pixels(images, stats: dict | None = None):
    """The model's input from stored images, for training and evaluation: ``scale_pixels``, then normalized with
    ``stats`` (``preprocessing``'s) when it has a mean. Broadcast over the last axis: C channels, or one."""
    x = scale_pixels(images)
    if stats is None or stats["mean"] is None:
        return x
    return (x - jnp.asarray(stats["mean"], jnp.float32)) / jnp.asarray(stats["std"], jnp.float32)


def step_key(rng, epoch_index, step_index, stream: int = AUGMENT_STREAM):
    """The key of one training step's augmentation (or another ``stream``'s draws): the seed's key folded with the
    epoch and the step."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, stream), epoch_index), step_index)


def draws(key, batch_size: int, augment) -> dict:
    """One batch's random choices, per image: "crop4", (batch, 2) int32 offsets (row, column) of the window in
    the padded image, 0..2 PAD; "flip", (batch,) bool. Each from its own key, so it is the same with or without
    the other augmentation."""
    found = {}
    if "crop4" in augment:
        found["crop4"] = jax.random.randint(jax.random.fold_in(key, 0), (batch_size, 2), 0, 2 * PAD + 1)
    if "flip" in augment:
        found["flip"] = jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (batch_size,))
    return found


def epoch_draws(rng, epoch_index, steps: int, batch_size: int, augment) -> dict:
    """``draws`` of every step of an epoch, each leaf (steps, batch, ...): scanned beside the epoch's batches."""
    return jax.vmap(lambda step: draws(step_key(rng, epoch_index, step), batch_size, augment))(jnp.arange(steps))


def augmented(x, drawn: dict):
    """A batch ``x`` (B, H, W[, C]) cropped then flipped as ``drawn`` (``draws``) says; what is not drawn, is not
    done."""
    if "crop4" in drawn:
        size, rest = x.shape[1:3], x.shape[3:]
        padded = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD)) + ((0, 0),) * len(rest))

        def window(image, at):
            return jax.lax.dynamic_slice(image, (*at, *(0,) * len(rest)), (*size, *rest))

        x = jax.vmap(window)(padded, drawn["crop4"])
    if "flip" in drawn:
        x = jnp.where(drawn["flip"].reshape(-1, *(1,) * (x.ndim - 1)), x[:, :, ::-1], x)
    return x
