import Foundation
import MeshMedia
import MeshTestKit
import Testing

/// Test signals: sines, seeded noise, and speech from espeak-ng.
enum TestAudio {
    static func sine(hz: Double, count: Int, amplitude: Double = 8000) -> [Int16] {
        (0..<count).map { Int16(amplitude * sin(2 * .pi * hz * Double($0) / Double(Audio.sampleRate))) }
    }

    static func noise(count: Int, amplitude: Int16 = 6000, seed: UInt64 = 1) -> [Int16] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int16.random(in: -amplitude...amplitude, using: &generator) }
    }

    /// The frames of `samples`, the last one padded with silence.
    static func frames(_ samples: [Int16]) -> [[Int16]] {
        stride(from: 0, to: samples.count, by: Audio.frameSamples).map { start in
            let frame = Array(samples[start..<min(start + Audio.frameSamples, samples.count)])
            return frame + [Int16](repeating: 0, count: Audio.frameSamples - frame.count)
        }
    }

    static func energy(_ samples: some Collection<Int16>) -> Double {
        samples.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, samples.count))
    }

    static let espeakPath = installed("espeak-ng")
    static let soxPath = installed("sox")

    private static func installed(_ name: String) -> String? {
        ["/usr/bin/", "/usr/local/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Writes `text` spoken by espeak-ng to `path`: a 22050 Hz mono WAV file.
    static func espeak(_ text: String, voice: String = "en", to path: String) throws {
        try run(try #require(espeakPath, "espeak-ng is not installed"), ["-v", voice, "-w", path, text])
    }

    /// `text` spoken by espeak-ng, at 48 kHz mono.
    static func speech(_ text: String, voice: String = "en") throws -> [Int16] {
        try withTemporaryDirectory { directory in
            let path = directory + "/speech.wav"
            try espeak(text, voice: voice, to: path)
            let wav = try WAV.read(path: path)
            return try Resample.toMono48k(samples: wav.samples, sampleRate: wav.sampleRate, channels: wav.channels)
        }
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(executable) \(arguments) failed")
    }
}

/// Runs `body` with a fresh directory under the system's temporary directory, then removes it.
func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let path = NSTemporaryDirectory() + "meshmedia-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

