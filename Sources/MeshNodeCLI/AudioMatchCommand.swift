import ArgumentParser
import Foundation
import MeshControl
import MeshMedia

/// `mesh-node audio-match`: how well a recording reproduces a reference (delay and normalised cross-correlation).
struct AudioMatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audio-match",
        abstract: "Compare a recording with the audio that was sent: delay and normalised cross-correlation.")

    @Option(help: "The sent audio (WAV).") var reference: String
    @Option(help: "The received audio (WAV).") var recorded: String
    @Option(help: "Largest delay to search, ms.") var maxLagMs: Int = 2000
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let a = try load(reference, flag: "--reference")
        let b = try load(recorded, flag: "--recorded")
        let result = AudioMatch.compare(reference: a, recorded: b, maxLagMs: maxLagMs)
        if json {
            print(try JSONValue(encoding: result).prettyText())
        } else {
            print(String(format: "delay %.1f ms, correlation %.3f over %.1f s", result.lagMs, result.correlation, result.overlapMs / 1000))
        }
    }

    private func load(_ path: String, flag: String) throws -> [Int16] {
        do {
            return try WAV.readMono48k(path: path)
        } catch {
            throw CLIError("\(flag) \(path): \(error)")
        }
    }
}
