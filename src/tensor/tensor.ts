/**
 * Tensor: a shape plus flat row-major storage (Float32Array for values, Int32Array for indices),
 * and the autograd tape.
 *
 * The tape is implicit, as in PyTorch: while gradients are enabled, every op whose inputs need a
 * gradient returns a tensor that remembers its inputs and a backward closure (a GradNode).
 * `backward(loss)` walks those nodes in reverse topological order. A tensor used at several
 * places (a shared layer applied at every recursion) receives the sum of its gradients, because
 * gradients are accumulated, never assigned over.
 */
import { AutogradError, DtypeError, ShapeError } from '../errors.js';
import { getBackend } from '../backend/index.js';

export type DType = 'float32' | 'int32';

/** How a non-leaf tensor was computed: its inputs and the function that pushes dOut into them. */
export interface GradNode {
  /** Op name, for error messages and debugging. */
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /**
   * Given the gradient of the loss w.r.t. this node's output, add each input's gradient with
   * `accumulateGrad` (only for inputs with requiresGrad).
   */
  backward(dOut: Float32Array): void;
}

let gradEnabled = true;

/** Whether ops record the tape right now. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run fn with the tape off (inference, optimiser updates, evaluation). Nests. */
export function noGrad<R>(fn: () => R): R {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`bad shape [${shape.join(', ')}]: dims must be integers ≥ 0`);
    n *= d;
  }
  return n;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
  readonly dtype: DType;
  /** True for parameters and for anything computed from them while the tape is on. */
  requiresGrad: boolean;
  /** Accumulated gradient (float32, same size), or null before backward reaches it. */
  grad: Float32Array | null = null;
  /** The op that made this tensor, or null for a leaf. */
  node: GradNode | null = null;
  /** Optional name (parameters carry their checkpoint name). */
  name: string | undefined;

  constructor(data: Float32Array | Int32Array, shape: readonly number[], requiresGrad = false) {
    const size = sizeOf(shape);
    if (data.length !== size) {
      throw new ShapeError(`tensor data has ${data.length} elements but shape [${shape.join(', ')}] needs ${size}`);
    }
    if (!(data instanceof Float32Array) && !(data instanceof Int32Array)) {
      throw new DtypeError(`tensor data must be a Float32Array or Int32Array, got ${(data as object).constructor.name}`);
    }
    if (requiresGrad && data instanceof Int32Array) {
      throw new DtypeError('an int32 tensor cannot require a gradient');
    }
    this.shape = Object.freeze([...shape]);
    this.data = data;
    this.dtype = data instanceof Float32Array ? 'float32' : 'int32';
    this.requiresGrad = requiresGrad;
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Dimension i (negative counts from the end). */
  dim(i: number): number {
    const d = this.shape[i < 0 ? this.shape.length + i : i];
    if (d === undefined) throw new ShapeError(`dim ${i} out of range for shape [${this.shape.join(', ')}]`);
    return d;
  }

  /** The float storage; DtypeError if this is an index tensor. */
  f32(what = 'tensor'): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new DtypeError(`${what} must be float32, got int32`);
    return this.data;
  }

  /** The index storage; DtypeError if this is a float tensor. */
  i32(what = 'tensor'): Int32Array {
    if (!(this.data instanceof Int32Array)) throw new DtypeError(`${what} must be int32, got float32`);
    return this.data;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new ShapeError(`item() needs one element, tensor has shape [${this.shape.join(', ')}]`);
    return this.data[0] as number;
  }

  /** A copy detached from the tape. */
  detach(): Tensor {
    return new Tensor(this.data.slice(), this.shape, false);
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}]${this.requiresGrad ? ', grad' : ''})`;
  }
}

// ---- construction --------------------------------------------------------------------------

/** A float tensor over the given data (not copied). */
export function tensor(data: Float32Array | readonly number[], shape: readonly number[], requiresGrad = false): Tensor {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  return new Tensor(arr, shape, requiresGrad);
}

/** An int32 index tensor over the given data (not copied). */
export function indexTensor(data: Int32Array | readonly number[], shape?: readonly number[]): Tensor {
  const arr = data instanceof Int32Array ? data : Int32Array.from(data);
  return new Tensor(arr, shape ?? [arr.length], false);
}

export function zeros(shape: readonly number[], requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(sizeOf(shape)), shape, requiresGrad);
}

export function full(shape: readonly number[], value: number, requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(sizeOf(shape)).fill(value), shape, requiresGrad);
}

/** A leaf parameter: requires grad, carries a name. */
export function parameter(data: Float32Array, shape: readonly number[], name?: string): Tensor {
  const t = new Tensor(data, shape, true);
  t.name = name;
  return t;
}

// ---- tape ------------------------------------------------------------------------------------

/** True when an op over these inputs must record a node. */
export function needsGrad(...inputs: readonly Tensor[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t.requiresGrad) return true;
  return false;
}

/** Attach a node to an op's output (call only when needsGrad said so). */
export function record(out: Tensor, op: string, inputs: readonly Tensor[], backward: (dOut: Float32Array) => void): Tensor {
  out.requiresGrad = true;
  out.node = { op, inputs, backward };
  return out;
}

/**
 * Add g into t.grad. `g` may be adopted as the gradient buffer when t has none yet and
 * `owned` is true (the caller made g fresh and will not touch it again), which saves a copy.
 */
export function accumulateGrad(t: Tensor, g: Float32Array, owned = true): void {
  if (!t.requiresGrad) return;
  if (g.length !== t.size) {
    throw new ShapeError(`gradient for ${t.toString()} has ${g.length} elements, expected ${t.size}`);
  }
  if (t.grad === null) {
    t.grad = owned ? g : g.slice();
  } else {
    getBackend().axpy(1, g, t.grad);
  }
}

/**
 * Backpropagate from a scalar: fills `.grad` of every tensor that requires it. Gradients of
 * leaves (parameters) accumulate across calls until zeroed; gradients of intermediate tensors
 * are released once used unless `retainGraphGrads` is set.
 */
export function backward(loss: Tensor, options: { retainGraphGrads?: boolean } = {}): void {
  if (loss.size !== 1) {
    throw new AutogradError(`backward() starts from a scalar; got shape [${loss.shape.join(', ')}]`);
  }
  if (!loss.requiresGrad) {
    throw new AutogradError('backward(): the loss does not depend on any tensor that requires a gradient');
  }
  // Reverse topological order by iterative DFS (recursion would overflow on deep unrolled graphs).
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: Array<[Tensor, number]> = [[loss, 0]];
  visited.add(loss);
  while (stack.length > 0) {
    const top = stack[stack.length - 1] as [Tensor, number];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const child = inputs[i] as Tensor;
      if (child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  accumulateGrad(loss, new Float32Array([1]));
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i] as Tensor;
    const node = t.node;
    if (node === null) continue; // a leaf: its grad stays
    const g = t.grad;
    if (g !== null) node.backward(g);
    if (!options.retainGraphGrads) t.grad = null;
  }
}

/** Zero (drop) the gradients of the given parameters. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.grad = null;
}
