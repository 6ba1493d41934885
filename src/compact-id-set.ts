/**
 * A set of item ids for files of tens of millions of items. A `Set<string>` costs ~50 bytes of JS
 * heap per id, so 10,000,000 ids outgrew a worker's 256 MB heap and killed it mid-check. Here the
 * ids' UTF-8 bytes sit one after another in a growing buffer, found through an open-addressing
 * table of their places: about the id's own length plus 12 bytes, outside the JS heap, and exact
 * (equal hashes are told apart by comparing bytes).
 */
const EMPTY = 0;

export class CompactIdSet {
  private bytes = Buffer.allocUnsafe(1 << 16);
  private used = 0;
  /** Id n occupies bytes [ends[n - 1] ?? 0, ends[n]). */
  private ends = new Uint32Array(1 << 10);
  private count = 0;
  /** Open addressing: 0 is empty, else the id's number + 1. */
  private slots = new Uint32Array(1 << 11);
  private scratch = Buffer.allocUnsafe(1 << 10);

  get size(): number {
    return this.count;
  }

  has(id: string): boolean {
    const length = this.encode(id);
    return this.slots[this.find(length)] !== EMPTY;
  }

  add(id: string): this {
    this.addNew(id);
    return this;
  }

  /** Adds the id; false when it was already there (one lookup where `has` then `add` take two). */
  addNew(id: string): boolean {
    const length = this.encode(id);
    const slot = this.find(length);
    if (this.slots[slot] !== EMPTY) return false;
    this.store(length);
    this.slots[slot] = this.count;
    if (this.count * 4 > this.slots.length * 3) this.rehash();
    return true;
  }

  /** The id's UTF-8 bytes into `scratch`; returns their length. */
  private encode(id: string): number {
    const most = Buffer.byteLength(id, 'utf8');
    if (most > this.scratch.length) this.scratch = Buffer.allocUnsafe(Math.max(most, this.scratch.length * 2));
    return this.scratch.write(id, 0, 'utf8');
  }

  /** The slot holding the id in `scratch`, or the empty slot where it would go. */
  private find(length: number): number {
    const mask = this.slots.length - 1;
    for (let slot = hash(this.scratch, 0, length) & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot] ?? EMPTY;
      if (entry === EMPTY) return slot;
      const start = entry === 1 ? 0 : (this.ends[entry - 2] ?? 0);
      const end = this.ends[entry - 1] ?? 0;
      if (end - start === length && this.sameBytes(start, length)) return slot;
    }
  }

  /** Whether the stored bytes at `start` equal `scratch`'s first `length`: short ids (most) byte by byte, as a native compare costs more than it saves there. */
  private sameBytes(start: number, length: number): boolean {
    if (length > 32) return this.bytes.compare(this.scratch, 0, length, start, start + length) === 0;
    const { bytes, scratch } = this;
    for (let i = 0; i < length; i++) if (bytes[start + i] !== scratch[i]) return false;
    return true;
  }

  private store(length: number): void {
    if (this.used + length > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.used + length, this.bytes.length * 2));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    this.scratch.copy(this.bytes, this.used, 0, length);
    this.used += length;
    if (this.count === this.ends.length) {
      const grown = new Uint32Array(this.ends.length * 2);
      grown.set(this.ends);
      this.ends = grown;
    }
    this.ends[this.count] = this.used;
    this.count += 1;
  }

  private rehash(): void {
    const slots = new Uint32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (let n = 1; n <= this.count; n++) {
      const start = n === 1 ? 0 : (this.ends[n - 2] ?? 0);
      let slot = hash(this.bytes, start, this.ends[n - 1] ?? 0) & mask;
      while (slots[slot] !== EMPTY) slot = (slot + 1) & mask;
      slots[slot] = n;
    }
    this.slots = slots;
  }
}

/** FNV-1a over bytes [start, end). */
function hash(bytes: Buffer, start: number, end: number): number {
  let value = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    value ^= bytes[i] ?? 0;
    value = Math.imul(value, 0x01000193);
  }
  return value >>> 0;
}
