/// Sliding anti-replay window over 64-bit counters (RFC 6479 shape, as in WireGuard): counters more than
/// `size` behind the highest seen are refused, and each counter inside the window is accepted once.
public struct ReplayWindow: Sendable {
    public static let size: UInt64 = 2048
    private static let wordCount = Int(size / 64)
    private var words = [UInt64](repeating: 0, count: wordCount)
    public private(set) var highest: UInt64 = 0
    private var seenAny = false

    public init() {}

    /// Whether `counter` would be accepted, without recording it (used before the AEAD check).
    public func wouldAccept(_ counter: UInt64) -> Bool {
        if !seenAny || counter > highest { return true }
        if highest - counter >= Self.size { return false }
        let (word, bit) = Self.position(counter)
        return words[word] & (1 << bit) == 0
    }

    /// Records `counter` (after the packet authenticated). Returns false when it was a replay.
    public mutating func accept(_ counter: UInt64) -> Bool {
        guard wouldAccept(counter) else { return false }
        if !seenAny || counter > highest {
            let advance = seenAny ? counter - highest : counter + 1
            if advance >= Self.size {
                for i in words.indices { words[i] = 0 }
            } else {
                var c = highest + 1
                while c <= counter {
                    let (word, bit) = Self.position(c)
                    words[word] &= ~(1 << bit)
                    c += 1
                }
            }
            highest = counter
            seenAny = true
        }
        let (word, bit) = Self.position(counter)
        words[word] |= 1 << bit
        return true
    }

    private static func position(_ counter: UInt64) -> (Int, UInt64) {
        (Int((counter / 64) % UInt64(wordCount)), counter % 64)
    }
}
