import Glibc

/// Monotonic clock, nanoseconds (the sender and the sink in the same process share it).
func monotonicNs() -> Int {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// Wall clock, ms (the link layer's handshake timestamps).
func wallMs() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_REALTIME, &t)
    return Int64(t.tv_sec) * 1_000 + Int64(t.tv_nsec) / 1_000_000
}

/// The end-to-end bytes of one generated packet, as call media looks inside a data message:
/// `[0x20][RTP header: v2, PT 111, seq u16, timestamp u32, SSRC u32][payload]`; the payload starts with the scheduled
/// send time (ns after the start of the traffic phase, u64), the session index (u32) and the packet number in the
/// session (u32), zero-padded to its size.
enum MediaPacket {
    static let tag: UInt8 = 0x20
    static let rtpHeaderBytes = 12
    /// Send time, session, packet number.
    static let stampBytes = 16
    static let samplesPerPacket: UInt32 = 960

    /// Inner bytes of packet 0 of `session` with a payload of `payloadBytes` (≥ `stampBytes`).
    static func template(session: Int, payloadBytes: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 1 + rtpHeaderBytes + payloadBytes)
        bytes[0] = tag
        bytes[1] = 0x80
        bytes[2] = 111
        put(ssrc(session), in: &bytes, at: 9)
        put(UInt32(session), in: &bytes, at: 1 + rtpHeaderBytes + 8)
        return bytes
    }

    static func ssrc(_ session: Int) -> UInt32 { UInt32(truncatingIfNeeded: session) &* 0x9E37_79B9 | 1 }

    /// Stamps packet `number` into a template whose inner bytes start at `offset`: RTP seq and timestamp, send time.
    static func stamp(_ bytes: inout [UInt8], at offset: Int, number: UInt32, offsetNs: Int) {
        put(UInt16(truncatingIfNeeded: number), in: &bytes, at: offset + 3)
        put(number &* samplesPerPacket, in: &bytes, at: offset + 5)
        put(UInt64(offsetNs), in: &bytes, at: offset + 1 + rtpHeaderBytes)
        put(number, in: &bytes, at: offset + 1 + rtpHeaderBytes + 12)
    }

    /// What the sink reads back from inner bytes starting at `offset`; nil when they are not a generated packet.
    static func read(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> (session: Int, number: UInt32, offsetNs: Int)? {
        guard bytes.count >= offset + 1 + rtpHeaderBytes + stampBytes, bytes[offset] == tag, bytes[offset + 1] == 0x80 else { return nil }
        let stamp = offset + 1 + rtpHeaderBytes
        let session = Int(get(UInt32.self, bytes, at: stamp + 8))
        let number = get(UInt32.self, bytes, at: stamp + 12)
        guard get(UInt32.self, bytes, at: offset + 9) == ssrc(session),
              get(UInt16.self, bytes, at: offset + 3) == UInt16(truncatingIfNeeded: number) else { return nil }
        return (session, number, Int(get(UInt64.self, bytes, at: stamp)))
    }
}

func put<T: FixedWidthInteger>(_ value: T, in bytes: inout [UInt8], at offset: Int) {
    for i in 0..<MemoryLayout<T>.size {
        bytes[offset + i] = UInt8(truncatingIfNeeded: value >> ((MemoryLayout<T>.size - 1 - i) * 8))
    }
}

func get<T: FixedWidthInteger>(_: T.Type, _ bytes: UnsafeRawBufferPointer, at offset: Int) -> T {
    var value: T = 0
    for i in 0..<MemoryLayout<T>.size { value = value << 8 | T(bytes[offset + i]) }
    return value
}

/// One-way latencies in 1 µs buckets up to 1 s (later ones share the last bucket): exact percentiles at µs resolution.
struct LatencyHistogram {
    private var buckets = [Int](repeating: 0, count: 1_000_001)
    private(set) var count = 0

    mutating func record(ns: Int) {
        buckets[min(max(ns / 1_000, 0), buckets.count - 1)] += 1
        count += 1
    }

    /// The latency below which `fraction` of the samples lie, µs; nil without samples.
    func percentile(_ fraction: Double) -> Int? {
        guard count > 0 else { return nil }
        let rank = max(1, Int((fraction * Double(count)).rounded(.up)))
        var seen = 0
        for (us, n) in buckets.enumerated() {
            seen += n
            if seen >= rank { return us }
        }
        return buckets.count - 1
    }
}

/// Which packet numbers of one session arrived (a bit per number), to count losses and duplicates.
struct SeenSet {
    private var words: [UInt64] = []
    private(set) var unique = 0
    private(set) var duplicates = 0

    mutating func insert(_ number: UInt32) {
        let word = Int(number >> 6), bit = UInt64(1) << UInt64(number & 63)
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word + 1 - words.count + words.count / 2)) }
        if words[word] & bit != 0 {
            duplicates += 1
        } else {
            words[word] |= bit
            unique += 1
        }
    }
}
