import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { burnCpu } from '../src/pipelines/synthetic';

/** The same work for raw, naive and (through its pipelines) Faultline. */
export async function thumbnailWork(source: string, outDir: string, id: string): Promise<number> {
  const data = await sharp(await readFile(source))
    .autoOrient()
    .resize({ width: 256, height: 256, fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 80 })
    .toBuffer();
  await mkdir(path.join(outDir, id), { recursive: true });
  await writeFile(path.join(outDir, id, 'thumbnail.webp'), data);
  return data.length;
}

export function createNaiveActivities(deps: { source: string; outDir: string }) {
  return {
    async naiveWork(input: { kind: 'cpu1ms' | 'thumbnail'; index: number }): Promise<void> {
      if (input.kind === 'cpu1ms') await burnCpu(1);
      else await thumbnailWork(deps.source, deps.outDir, `n${input.index}`);
    },
  };
}
