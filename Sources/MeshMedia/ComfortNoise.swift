/// Low-level noise played in place of a held or quelched call's audio, so that the listener hears a live line
/// rather than digital silence: white noise at -60 dBFS RMS (about the comfort noise Opus plays in DTX over a quiet
/// room), from a seeded generator.
public struct ComfortNoise: Sendable {
    /// Uniform samples in ±amplitude have an RMS of amplitude / √3: 32768 × 10^(-60/20) × √3 ≈ 57.
    static let amplitude: UInt64 = 57
    private var state: UInt64

    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    /// The next 20 ms frame.
    public mutating func frame() -> [Int16] {
        (0..<Audio.frameSamples).map { _ in
            // xorshift64*
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            let value = (state &* 0x2545_F491_4F6C_DD1D) >> 32
            return Int16(Int64(value % (2 * Self.amplitude + 1)) - Int64(Self.amplitude))
        }
    }
}
