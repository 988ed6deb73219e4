#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL

/// bf16 matrix products for `ComputePrecision.bf16`: the linear layers' products with a frozen
/// weight (y = x·Wᵀ and dx += dy·W), on oneDNN's AVX512_BF16 matmul kernels. The activation is
/// rounded to bf16 per call (a oneDNN reorder); the weight's bf16 copy (same [N, K] layout) is made
/// once and kept (`FrozenWeightCache`), shared by both products and every row count. Products with
/// trained weights, and dW, stay fp32.
enum OneDNNMatmul {
    struct Key: Hashable {
        let m: Int, n: Int, k: Int
        let transB: Bool, accumulate: Bool
        /// oneDNN's kernels split their work for the thread count at creation.
        let threads: Int
    }

    /// c[M, N] (+)= a[M, K] · op(W), op(W) = Wᵀ for W [N, K] (`transB`) or W for W [K, N], with a
    /// and W rounded to bf16 and fp32 accumulation. false (nothing written) where oneDNN has no
    /// bf16 kernel for it: the caller computes in fp32.
    static func product(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, weight: Tensor, transB: Bool,
                        c: UnsafeMutablePointer<Float>, accumulate: Bool) -> Bool {
        OneDNN.withThreads { threads in
            guard let plan = plan(Key(m: m, n: n, k: k, transB: transB, accumulate: accumulate, threads: threads)) else { return false }
            return Scratch.with { arena in
                let call = OneDNN.Call(engine: plan.engine, arena: arena, arenaBudget: Conv2dGeometry.defaultColumnBudget)
                defer { call.close() }
                guard let w = bf16Copy(of: weight, call) else { return false }
                var (ua, ad, wd, cd) = (plan.userSource, plan.source, plan.weights, plan.destination)
                let lowA = call.memory(&ad, call.buffer(&ad))
                call.reserveScratchpad(for: [plan.sourceReorder, plan.matmul])
                call.execute(plan.sourceReorder, [(DNNLArg.from, call.memory(&ua, UnsafeMutableRawPointer(mutating: a))), (DNNLArg.to, lowA)])
                call.execute(plan.matmul, [(DNNLArg.src, lowA), (DNNLArg.weights, call.memory(&wd, w)), (DNNLArg.dst, call.memory(&cd, c))])
                return true
            }
        }
    }

    /// The weight's bf16 copy, made (by a reorder on `call`'s stream) on first use; nil if oneDNN
    /// cannot make it.
    private static func bf16Copy(of weight: Tensor, _ call: OneDNN.Call) -> UnsafeMutableRawPointer? {
        var from = dnnl_memory_desc_t(), to = dnnl_memory_desc_t()
        let dims = [Int64(weight.count)]
        guard describe(&from, dims, dnnl_a), describe(&to, dims, dnnl_a, dnnl_bf16) else { return nil }
        // One copy per weight, in its own [N, K] order: both products and every row count share it.
        let entry = FrozenWeightCache.shared.entry(for: weight, layout: to)
        guard !entry.filled else { return entry.data }
        guard let convert = OneDNN.reorder(&from, &to, accumulate: false, call.engine) else {
            free(entry.data)
            return nil
        }
        defer { dnnl_primitive_destroy(convert.primitive) }
        call.reserveScratchpad(for: [convert])
        call.execute(convert, [(DNNLArg.from, call.memory(&from, weight.pointer)), (DNNLArg.to, call.memory(&to, entry.data))])
        call.wait()
        return FrozenWeightCache.shared.store(entry, for: weight, layout: to)
    }

    private static let plans = OneDNN.PlanCache<Key, Plan>()

    private static func plan(_ key: Key) -> Plan? {
        plans.plan(key) { OneDNN.engine.flatMap { Plan(key, engine: $0) } }
    }

    final class Plan: @unchecked Sendable {
        let engine: dnnl_engine_t
        var userSource = dnnl_memory_desc_t(), source = dnnl_memory_desc_t()
        var weights = dnnl_memory_desc_t(), destination = dnnl_memory_desc_t()
        /// The activation's conversion to bf16 (oneDNN's JIT reorder) and the product.
        let sourceReorder: OneDNN.Step, matmul: OneDNN.Step

        init?(_ key: Key, engine: dnnl_engine_t) {
            self.engine = engine
            let (m, n, k) = (Int64(key.m), Int64(key.n), Int64(key.k))
            // W [N, K] row-major is the [K, N] matrix in column-major order ("ba").
            guard describe(&userSource, [m, k], dnnl_ab), describe(&source, [m, k], dnnl_ab, dnnl_bf16),
                  describe(&weights, [k, n], key.transB ? dnnl_ba : dnnl_ab, dnnl_bf16),
                  describe(&destination, [m, n], dnnl_ab) else { return nil }
            var desc = dnnl_matmul_desc_t()
            guard dnnl_matmul_desc_init(&desc, &source, &weights, nil, &destination) == dnnl_success,
                  let attr = OneDNN.attributes(accumulate: key.accumulate) else { return nil }
            defer { dnnl_primitive_attr_destroy(attr) }
            var pd: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil) == dnnl_success, let pd else { return nil }
            defer { dnnl_primitive_desc_destroy(pd) }
            guard OneDNN.isJIT(pd), let step = OneDNN.Step(pd) else { return nil }
            guard let reorder = OneDNN.reorder(&userSource, &source, accumulate: false, engine) else {
                dnnl_primitive_destroy(step.primitive)
                return nil
            }
            matmul = step
            sourceReorder = reorder
        }

        deinit {
            dnnl_primitive_destroy(matmul.primitive)
            dnnl_primitive_destroy(sourceReorder.primitive)
        }
    }
}
