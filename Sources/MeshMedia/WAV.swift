#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// RIFF/WAVE files. Reading takes integer PCM of 8, 16, 24 or 32 bits and IEEE float of 32 bits (plain or
/// WAVE_FORMAT_EXTENSIBLE), skips chunks it does not know, and converts to Int16. Writing makes 16-bit PCM.
public enum WAV {
    private static let formatPCM: UInt16 = 1
    private static let formatFloat: UInt16 = 3
    private static let formatExtensible: UInt16 = 0xfffe
    /// The canonical header `header` makes: RIFF, fmt and data chunk headers.
    private static let headerSize = 44

    /// Interleaved samples, the sample rate and the channel count.
    public static func read(path: String) throws(MediaError) -> (samples: [Int16], sampleRate: Int, channels: Int) {
        let bytes = try readFile(path)
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("RIFF".utf8), bytes[8..<12].elementsEqual("WAVE".utf8)
        else { throw MediaError("\(path): not a RIFF/WAVE file") }
        var format: ArraySlice<UInt8>?
        var data: ArraySlice<UInt8>?
        var offset = 12
        while offset + 8 <= bytes.count, format == nil || data == nil {
            let id = String(decoding: bytes[offset..<offset + 4], as: UTF8.self)
            // A size past the end of the file (a streaming writer's placeholder, or a cut-off file) means "the rest".
            let size = min(Int(bytes.littleEndian(UInt32.self, at: offset + 4)), bytes.count - offset - 8)
            let body = bytes[offset + 8..<offset + 8 + size]
            switch id {
            case "fmt ": format = body
            case "data": data = body
            default: break
            }
            offset += 8 + size + size % 2
        }
        guard let format else { throw MediaError("\(path): no fmt chunk") }
        guard let data else { throw MediaError("\(path): no data chunk") }
        let layout = try Layout(fmt: format, path: path)
        return (layout.decode(data), layout.sampleRate, layout.channels)
    }

    /// Writes 16-bit PCM; `samples` are interleaved when `channels` > 1.
    public static func write(path: String, samples: [Int16], sampleRate: Int, channels: Int = 1) throws(MediaError) {
        let writer = try WAVWriter(path: path, sampleRate: sampleRate, channels: channels)
        try writer.append(samples)
        try writer.close()
    }

    /// The 44-byte header of a 16-bit PCM file holding `dataBytes` bytes of samples.
    static func header(sampleRate: Int, channels: Int, dataBytes: Int) -> [UInt8] {
        let blockAlign = channels * 2
        var out: [UInt8] = []
        out.reserveCapacity(headerSize)
        out += Array("RIFF".utf8)
        out.appendLittleEndian(UInt32(clamping: headerSize - 8 + dataBytes))
        out += Array("WAVEfmt ".utf8)
        out.appendLittleEndian(UInt32(16))
        out.appendLittleEndian(formatPCM)
        out.appendLittleEndian(UInt16(channels))
        out.appendLittleEndian(UInt32(sampleRate))
        out.appendLittleEndian(UInt32(sampleRate * blockAlign))
        out.appendLittleEndian(UInt16(blockAlign))
        out.appendLittleEndian(UInt16(16))
        out += Array("data".utf8)
        out.appendLittleEndian(UInt32(clamping: dataBytes))
        return out
    }

    /// What the fmt chunk says about the samples.
    private struct Layout {
        enum Encoding { case unsignedByte, signed(bytes: Int), float32 }
        let encoding: Encoding
        let channels: Int
        let sampleRate: Int
        let bytesPerSample: Int

        init(fmt: ArraySlice<UInt8>, path: String) throws(MediaError) {
            guard fmt.count >= 16 else { throw MediaError("\(path): fmt chunk of \(fmt.count) bytes is too short") }
            let start = fmt.startIndex
            var tag = fmt.littleEndian(UInt16.self, at: start)
            channels = Int(fmt.littleEndian(UInt16.self, at: start + 2))
            sampleRate = Int(fmt.littleEndian(UInt32.self, at: start + 4))
            let bits = Int(fmt.littleEndian(UInt16.self, at: start + 14))
            if tag == WAV.formatExtensible {
                // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID at byte 24 starts with the plain format tag.
                guard fmt.count >= 26 else { throw MediaError("\(path): extensible fmt chunk is too short") }
                tag = fmt.littleEndian(UInt16.self, at: start + 24)
            }
            guard channels >= 1, sampleRate >= 1 else {
                throw MediaError("\(path): \(channels) channels at \(sampleRate) Hz is not audio")
            }
            switch (tag, bits) {
            case (WAV.formatPCM, 8): encoding = .unsignedByte
            case (WAV.formatPCM, 16), (WAV.formatPCM, 24), (WAV.formatPCM, 32): encoding = .signed(bytes: bits / 8)
            case (WAV.formatFloat, 32): encoding = .float32
            default:
                throw MediaError("\(path): unsupported WAV encoding (format tag \(tag), \(bits) bits); "
                    + "use PCM 8/16/24/32-bit or float 32-bit")
            }
            bytesPerSample = bits / 8
        }

        /// Whole frames only: a cut-off last frame is dropped.
        func decode(_ data: ArraySlice<UInt8>) -> [Int16] {
            let count = data.count / (bytesPerSample * channels) * channels
            var samples = [Int16](repeating: 0, count: count)
            data.withUnsafeBytes { raw in
                for i in 0..<count {
                    let at = i * bytesPerSample
                    switch encoding {
                    case .unsignedByte:
                        samples[i] = Int16(Int(raw[at]) - 128) << 8
                    case .signed(let width):
                        // The two most significant bytes of the little-endian sample.
                        samples[i] = Int16(bitPattern: UInt16(raw[at + width - 2]) | UInt16(raw[at + width - 1]) << 8)
                    case .float32:
                        let value = Float(bitPattern: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian)
                        samples[i] = Int16(clampingFloat: value * 32767)
                    }
                }
            }
            return samples
        }
    }

    private static func readFile(_ path: String) throws(MediaError) -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw MediaError("\(path): \(String(cString: strerror(errno)))") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            bytes += chunk.prefix(count)
            if count < chunk.count { break }
        }
        guard ferror(file) == 0 else { throw MediaError("\(path): read failed") }
        return bytes
    }
}

/// Writes a 16-bit PCM WAV file as audio comes in. The header's sizes are rewritten after every second of
/// audio and at `close`, and the file is flushed then, so a killed process leaves a playable file.
/// Not thread-safe: one owner appends, on one thread at a time (the node hands its recordings to its database
/// writer's serial thread, which runs every append and the close in order).
public final class WAVWriter: @unchecked Sendable {
    public let path: String
    private let sampleRate: Int
    private let channels: Int
    private var file: UnsafeMutablePointer<FILE>?
    private var dataBytes = 0
    private var bytesSinceHeader = 0

    public init(path: String, sampleRate: Int = Audio.sampleRate, channels: Int = 1) throws(MediaError) {
        guard (1...1_000_000).contains(sampleRate), (1...16).contains(channels) else {
            throw MediaError("\(path): cannot write \(channels) channels at \(sampleRate) Hz")
        }
        guard let file = fopen(path, "wb") else { throw MediaError("\(path): \(String(cString: strerror(errno)))") }
        self.path = path
        self.sampleRate = sampleRate
        self.channels = channels
        self.file = file
        try writeHeader()
    }

    deinit { try? close() }

    /// Appends interleaved samples.
    public func append(_ samples: [Int16]) throws(MediaError) {
        guard let file else { throw MediaError("\(path): append after close") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(samples.count * 2)
        for sample in samples { bytes.appendLittleEndian(UInt16(bitPattern: sample)) }
        guard fwrite(bytes, 1, bytes.count, file) == bytes.count else { throw failure("write") }
        dataBytes += bytes.count
        bytesSinceHeader += bytes.count
        if bytesSinceHeader >= sampleRate * channels * 2 { try writeHeader() }
    }

    /// Writes the final sizes and closes the file; later calls do nothing.
    public func close() throws(MediaError) {
        guard let file else { return }
        defer { self.file = nil }
        try writeHeader()
        guard fclose(file) == 0 else { throw failure("close") }
    }

    /// Rewrites the header with the current sizes and flushes everything to the kernel.
    private func writeHeader() throws(MediaError) {
        guard let file else { return }
        let header = WAV.header(sampleRate: sampleRate, channels: channels, dataBytes: dataBytes)
        guard fseek(file, 0, SEEK_SET) == 0, fwrite(header, 1, header.count, file) == header.count,
              fseek(file, 0, SEEK_END) == 0, fflush(file) == 0
        else { throw failure("header write") }
        bytesSinceHeader = 0
    }

    private func failure(_ what: String) -> MediaError {
        MediaError("\(path): \(what) failed: \(String(cString: strerror(errno)))")
    }
}

extension Int16 {
    /// Rounds and saturates; NaN becomes 0.
    init(clampingFloat value: Float) {
        self = value.isNaN ? 0 : Int16(Swift.max(-32768, Swift.min(32767, value.rounded())))
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

extension Collection where Element == UInt8, Index == Int {
    /// The little-endian integer at `offset`; the caller checks the bounds.
    func littleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }
}
