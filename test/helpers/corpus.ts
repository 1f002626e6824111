// Small corpora for tests that train for a few steps.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** corpus.jsonl in `dir`: 40 short documents of one repeated sentence (fast to tokenise and learn); returns its path. */
export function writeRepeatedJsonl(dir: string): string {
  const file = join(dir, 'corpus.jsonl');
  const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Document ${i}: we the people form a more perfect union. `.repeat(6) }));
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}
