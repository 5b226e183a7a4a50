import MeshMedia

/// Network traces for `mesh-node media-lab --trace` (docs/media-lab.md).
enum TraceFuzz {
    static func run(_ input: [UInt8]) {
        _ = try? Trace(csv: String(decoding: input, as: UTF8.self))
    }

    /// The first seconds of each trace in Tools/traces, captured from real paths.
    static func seeds() -> [[UInt8]] {
        ["bursty", "clean", "jitter", "reorder", "spikes"].map { trace in
            let text = String(decoding: Fuzz.contents(Fuzz.repository.path + "/Tools/traces/\(trace).csv"), as: UTF8.self)
            return Array(text.split(separator: "\n", omittingEmptySubsequences: false).prefix(60).joined(separator: "\n").utf8)
        }
    }
}
