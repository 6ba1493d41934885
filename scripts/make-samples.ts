/**
 * Generates the small sample inputs committed under samples/images/ (demo and tests):
 * with EXIF, without EXIF, PNG with alpha, a truncated JPEG, a non-image, a too-small image,
 * and a high-entropy image that cannot fit a tiny byte budget. Deterministic.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';

const OUT = path.resolve(__dirname, '..', 'samples', 'images');

function gradient(width: number, height: number, channels: 3 | 4): Buffer {
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const offset = (y * width + x) * channels;
      data[offset] = Math.round((255 * x) / width);
      data[offset + 1] = Math.round((255 * y) / height);
      data[offset + 2] = 128 + Math.round(64 * Math.sin(x / 9) * Math.cos(y / 7));
      if (channels === 4) data[offset + 3] = x < width / 2 ? 255 : 96;
    }
  }
  return data;
}

/** Deterministic pseudo-random noise (xorshift), which no codec can compress. */
function noise(width: number, height: number): Buffer {
  const data = Buffer.alloc(width * height * 3);
  let state = 0x9e3779b9;
  for (let i = 0; i < data.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    data[i] = state & 0xff;
  }
  return data;
}

async function main(): Promise<void> {
  await mkdir(OUT, { recursive: true });
  const photo = sharp(gradient(640, 480, 3), { raw: { width: 640, height: 480, channels: 3 } });
  await photo
    .clone()
    .jpeg({ quality: 85 })
    .withExif({ IFD0: { Make: 'Faultline', Model: 'Sample Camera', Copyright: 'CC0' }, IFD2: { ExposureTime: '1/125', FNumber: '4' } })
    .toFile(path.join(OUT, 'with-exif.jpg'));
  await photo.clone().jpeg({ quality: 85 }).toFile(path.join(OUT, 'no-exif.jpg'));
  await sharp(gradient(160, 120, 4), { raw: { width: 160, height: 120, channels: 4 } })
    .png({ palette: false, compressionLevel: 9 })
    .toFile(path.join(OUT, 'alpha.png'));
  const full = await photo.clone().jpeg({ quality: 90 }).toBuffer();
  await writeFile(path.join(OUT, 'truncated.jpg'), full.subarray(0, Math.floor(full.length * 0.4)));
  await writeFile(path.join(OUT, 'not-an-image.jpg'), 'This is a text file wearing a .jpg extension.\n');
  await sharp(gradient(24, 24, 3), { raw: { width: 24, height: 24, channels: 3 } })
    .png()
    .toFile(path.join(OUT, 'tiny.png'));
  await sharp(noise(300, 300), { raw: { width: 300, height: 300, channels: 3 } })
    .png()
    .toFile(path.join(OUT, 'noise.png'));
  console.log(`samples written to ${OUT}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
