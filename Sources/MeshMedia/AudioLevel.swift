import Foundation

/// RFC 6464's audio level header extension (one-byte form, ID `AudioLevel.extensionID`, 1 byte): the V bit
/// (the sender's VAD called the packet's audio speech) and the level in −dBov, 0 (loudest) ... 127 (silence).
/// The sender adds it when its VAD is on; the receiver uses V = 0 to know the sender is in silence even when the
/// DTX packet that said so was lost, and a relay could read the level without decrypting the audio.
public struct AudioLevel: Sendable, Equatable {
    public static let extensionID: UInt8 = 2
    public var voice: Bool
    /// −dBov, 0...127.
    public var level: UInt8

    public init(voice: Bool, level: UInt8) {
        self.voice = voice
        self.level = min(level, 127)
    }

    /// The level of 16-bit samples: their RMS relative to full scale, in whole −dB, 127 for digital silence.
    public init(voice: Bool, samples: [Int16]) {
        let power = samples.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, samples.count))
        let dBov = power > 0 ? 10 * log10(power / (32768.0 * 32768.0)) : -127
        self.init(voice: voice, level: UInt8(min(127, max(0, (-dBov).rounded()))))
    }

    public var bytes: [UInt8] { [(voice ? 0x80 : 0) | level] }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 1 else { return nil }
        self.init(voice: bytes[0] & 0x80 != 0, level: bytes[0] & 0x7f)
    }
}
