//! Image transforms of the reference, seeded per sample.
//!
//! Train (reference, `scaleSize = 512`, `cropSize = 448`):
//! 1. resize to `scale_size × scale_size` (bicubic: Catmull-Rom, antialiased when shrinking);
//! 2. random crop of a side drawn uniformly from `crop_sizes` (`{512, 448, 384, 320, 256}`), at a
//!    uniformly drawn position;
//! 3. resize to `image_size × image_size` (bicubic);
//! 4. horizontal flip with probability `flip_probability` (0.5);
//! 5. normalise ([`Normalization`]).
//!
//! Test: resize to `image_size × image_size` (bicubic) and normalise.
//!
//! The random choices of a sample come from a generator seeded with `(seed, epoch, index)`, so a
//! batch is the same whatever the thread scheduling. torchvision's own random stream cannot be
//! reproduced, so crops differ from the reference's sample by sample but follow the same law.

use burn::config::Config;
use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::rng::SeededRng;

/// How pixel values in [0, 255] become network inputs.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Normalization {
    /// `(x / 255 − mean) / std` with ImageNet's mean (0.485, 0.456, 0.406) and std
    /// (0.229, 0.224, 0.225): torchvision ResNets.
    ImageNet,
    /// `(x − 127) / 128`: EfficientNet-Lite (TF-Lite models).
    EfficientNetLite,
    /// `x / 255`, no centring.
    UnitRange,
}

impl Normalization {
    /// Per-channel `(scale, offset)` such that the input is `x * scale + offset` for `x` in
    /// [0, 255].
    pub fn affine(self) -> [(f32, f32); 3] {
        match self {
            Normalization::ImageNet => {
                let mean = [0.485f32, 0.456, 0.406];
                let std = [0.229f32, 0.224, 0.225];
                std::array::from_fn(|c| (1.0 / (255.0 * std[c]), -mean[c] / std[c]))
            }
            Normalization::EfficientNetLite => [(1.0 / 128.0, -127.0 / 128.0); 3],
            Normalization::UnitRange => [(1.0 / 255.0, 0.0); 3],
        }
    }
}

/// Configuration of [`ImageTransform`].
#[derive(Config, Debug)]
pub struct TransformConfig {
    /// Side of the first square resize of the training transform (`scaleSize`). Default: 512.
    #[config(default = 512)]
    pub scale_size: u32,
    /// Crop sides, one drawn uniformly per training sample; each at most `scale_size`.
    /// Default: `[512, 448, 384, 320, 256]`.
    #[config(default = "vec![512, 448, 384, 320, 256]")]
    pub crop_sizes: Vec<u32>,
    /// Side of the output images (`cropSize`). Default: 448.
    #[config(default = 448)]
    pub image_size: u32,
    /// Probability of a horizontal flip in training. Default: 0.5.
    #[config(default = 0.5)]
    pub flip_probability: f64,
    /// Input normalisation of the backbone. Default: ImageNet mean/std.
    #[config(default = "Normalization::ImageNet")]
    pub normalization: Normalization,
    /// Seed of the augmentation; a sample's draws depend on `(seed, epoch, index)`. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
}

impl TransformConfig {
    /// The reference's sizes scaled to an output side `image_size`: `scale_size = image_size ·
    /// 8/7` and crops `scale_size · {1, 7/8, 6/8, 5/8, 4/8}`, as 512/448 and
    /// {512, 448, 384, 320, 256} are for 448. `image_size = 448` gives the reference's numbers.
    pub fn scaled(image_size: u32) -> Self {
        let scale = (image_size as f64 * 8.0 / 7.0).round() as u32;
        let crops = (4..=8)
            .rev()
            .map(|k| (scale as f64 * k as f64 / 8.0).round() as u32)
            .collect();
        Self::new()
            .with_image_size(image_size)
            .with_scale_size(scale)
            .with_crop_sizes(crops)
    }

    /// A mild preset for the embedded 64×64 mosaics: resize to 72, crop 72 or 64, output 64.
    /// The reference's crop set (down to half the image) would often cut a 28-px object out of
    /// a 64-px mosaic while keeping its label.
    pub fn embedded() -> Self {
        Self::new()
            .with_scale_size(72)
            .with_crop_sizes(vec![72, 64])
            .with_image_size(64)
    }

    /// Builds the transform.
    ///
    /// # Panics
    /// If a size is 0, `crop_sizes` is empty, a crop is larger than `scale_size`, or
    /// `flip_probability` is outside [0, 1].
    pub fn init(&self) -> ImageTransform {
        assert!(
            self.scale_size > 0 && self.image_size > 0,
            "transform sizes must be positive: scale_size={}, image_size={}",
            self.scale_size,
            self.image_size
        );
        assert!(
            !self.crop_sizes.is_empty()
                && self
                    .crop_sizes
                    .iter()
                    .all(|&c| c > 0 && c <= self.scale_size),
            "crop sizes must be in 1..=scale_size: crop_sizes={:?}, scale_size={}",
            self.crop_sizes,
            self.scale_size
        );
        assert!(
            (0.0..=1.0).contains(&self.flip_probability),
            "flip_probability must be in [0, 1], got {}",
            self.flip_probability
        );
        ImageTransform {
            config: self.clone(),
        }
    }
}

/// The random choices of one training sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropParams {
    /// Crop side, one of the configured crop sizes.
    pub size: u32,
    /// Top edge of the crop in the `scale_size` image.
    pub top: u32,
    /// Left edge of the crop in the `scale_size` image.
    pub left: u32,
    /// Whether the crop is flipped horizontally.
    pub flip: bool,
}

/// Train and test transforms (see the module doc).
#[derive(Clone, Debug)]
pub struct ImageTransform {
    config: TransformConfig,
}

impl ImageTransform {
    /// The configuration.
    pub fn config(&self) -> &TransformConfig {
        &self.config
    }

    /// Side of the output images.
    pub fn image_size(&self) -> u32 {
        self.config.image_size
    }

    /// The random choices for sample `index` at `epoch`.
    pub fn crop_params(&self, epoch: usize, index: usize) -> CropParams {
        let mut rng = SeededRng::from_parts(&[self.config.seed, epoch as u64, index as u64]);
        let crops = &self.config.crop_sizes;
        let size = crops[rng.below(crops.len())];
        let room = (self.config.scale_size - size) as usize + 1;
        let top = rng.below(room) as u32;
        let left = rng.below(room) as u32;
        let flip = rng.next_f64() < self.config.flip_probability;
        CropParams {
            size,
            top,
            left,
            flip,
        }
    }

    /// Steps 1–4 of the training transform: the augmented RGB image,
    /// `image_size × image_size`.
    pub fn train_image(&self, image: &RgbImage, epoch: usize, index: usize) -> RgbImage {
        let p = self.crop_params(epoch, index);
        let s = self.config.scale_size;
        let scaled = resize(image, s, s);
        let cropped = if p.size == s {
            scaled
        } else {
            imageops::crop_imm(&scaled, p.left, p.top, p.size, p.size).to_image()
        };
        let mut out = resize(&cropped, self.config.image_size, self.config.image_size);
        if p.flip {
            imageops::flip_horizontal_in_place(&mut out);
        }
        out
    }

    /// Step 1 of the test transform: resize to `image_size × image_size`.
    pub fn test_image(&self, image: &RgbImage) -> RgbImage {
        resize(image, self.config.image_size, self.config.image_size)
    }

    /// The training transform, normalised: `[3, image_size, image_size]`, channel-major.
    pub fn train(&self, image: &RgbImage, epoch: usize, index: usize) -> Vec<f32> {
        self.normalize(&self.train_image(image, epoch, index))
    }

    /// The test transform, normalised: `[3, image_size, image_size]`, channel-major.
    pub fn test(&self, image: &RgbImage) -> Vec<f32> {
        self.normalize(&self.test_image(image))
    }

    /// Normalises an RGB image into `[3, height, width]`, channel-major.
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        normalize(image, self.config.normalization)
    }
}

/// Normalises an RGB image into `[3, height, width]`, channel-major.
pub fn normalize(image: &RgbImage, normalization: Normalization) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    let affine = normalization.affine();
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0] as f32 * affine[0].0 + affine[0].1;
        g[i] = px[1] as f32 * affine[1].0 + affine[1].1;
        b[i] = px[2] as f32 * affine[2].0 + affine[2].1;
    }
    out
}

/// Bicubic (Catmull-Rom) resize; a no-op copy when the size already matches.
fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.width() == width && image.height() == height {
        image.clone()
    } else {
        imageops::resize(image, width, height, FilterType::CatmullRom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]))
    }

    #[test]
    fn defaults_are_the_reference() {
        let c = TransformConfig::new();
        assert_eq!(c.scale_size, 512);
        assert_eq!(c.crop_sizes, vec![512, 448, 384, 320, 256]);
        assert_eq!(c.image_size, 448);
        let s = TransformConfig::scaled(448);
        assert_eq!(
            (s.scale_size, s.crop_sizes),
            (512, vec![512, 448, 384, 320, 256])
        );
        let s = TransformConfig::scaled(224);
        assert_eq!(
            (s.scale_size, s.crop_sizes),
            (256, vec![256, 224, 192, 160, 128])
        );
    }

    #[test]
    fn normalisations() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 127]));
        let v = normalize(&img, Normalization::ImageNet);
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((v[1] - (-0.456 / 0.224)).abs() < 1e-5);
        let v = normalize(&img, Normalization::EfficientNetLite);
        assert_eq!(v, vec![1.0, -127.0 / 128.0, 0.0]);
        let v = normalize(&img, Normalization::UnitRange);
        assert_eq!(v[0], 1.0);
    }

    #[test]
    fn train_transform_is_seeded_and_sized() {
        let t = TransformConfig::new()
            .with_scale_size(40)
            .with_crop_sizes(vec![40, 32, 24])
            .with_image_size(16)
            .init();
        let img = gradient(50, 30);
        let a = t.train(&img, 3, 7);
        assert_eq!(a.len(), 3 * 16 * 16);
        assert_eq!(a, t.train(&img, 3, 7));
        // Over many samples every crop size and both flips occur, and all crops fit.
        let mut sizes = std::collections::HashSet::new();
        let mut flips = 0;
        for i in 0..200 {
            let p = t.crop_params(0, i);
            assert!(p.top + p.size <= 40 && p.left + p.size <= 40);
            sizes.insert(p.size);
            flips += p.flip as usize;
        }
        assert_eq!(sizes.len(), 3);
        assert!((60..140).contains(&flips), "{flips}");
        assert_ne!(t.crop_params(0, 1), t.crop_params(1, 1));
        assert_eq!(t.test(&img).len(), 3 * 16 * 16);
    }

    #[test]
    fn full_crop_without_flip_equals_test_transform() {
        let t = TransformConfig::new()
            .with_scale_size(16)
            .with_crop_sizes(vec![16])
            .with_image_size(16)
            .with_flip_probability(0.0)
            .init();
        let img = gradient(16, 16);
        assert_eq!(t.train_image(&img, 0, 0), img);
        assert_eq!(t.test_image(&img), img);
        let flipped = TransformConfig::new()
            .with_scale_size(16)
            .with_crop_sizes(vec![16])
            .with_image_size(16)
            .with_flip_probability(1.0)
            .init()
            .train_image(&img, 0, 0);
        assert_eq!(flipped.get_pixel(0, 3), img.get_pixel(15, 3));
    }
}
