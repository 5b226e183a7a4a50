import ArgumentParser
import Foundation
import MeshControl
import MeshDaemon
import MeshMedia

/// `mesh-node media-lab`: replays a network trace through encoder → channel → playout → decoder, offline and
/// deterministically, and prints what playout did (docs/media-lab.md).
struct MediaLabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "media-lab",
        abstract: "Replay a network trace through the media core offline: playout delay, loss, concealment.")

    @Option(help: "The trace: CSV with header seq,send_ms,arrival_ms (docs/media-lab.md).") var trace: String
    @Option(help: "Speech to send (WAV, any rate and channel count; repeated to cover the trace).") var input: String
    @Option(help: "Where to write what the receiver played (48 kHz mono WAV).") var output: String
    @Option(help: "adaptive, or fixed:MS for a fixed buffer.") var playout = "adaptive"
    @Option(help: "Encoder profile: studio, good, normal, degraded, catastrophic.") var profile = "normal"
    @Option(help: "Opus encoder complexity, 0...10.") var complexity = 5
    @Flag(help: "Turn Opus DTX off.") var noDtx = false
    @Option(help: "Redundant copies of earlier packets: auto (while the receiver reports burst loss), on, off.")
    var redundancy = "auto"
    @Flag(help: "speexdsp noise suppression on the input.") var denoise = false
    @Flag(help: "speexdsp voice activity detection on the input.") var vad = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var config = MediaConfig()
        guard let mode = PlayoutMode(playout) else { throw CLIError("--playout \(playout): use adaptive or fixed:MS") }
        guard let chosen = QualityProfile.named(profile) else {
            throw CLIError("--profile \(profile): use \(QualityProfile.all.map(\.name).joined(separator: ", "))")
        }
        do {
            config.redundancy = try NodeConfig.parseRedundancy(redundancy, what: "--redundancy")
        } catch {
            throw CLIError(error.description)
        }
        config.playout = mode
        config.profile = chosen
        config.complexity = complexity
        config.dtx = !noDtx
        config.denoise = denoise
        config.vad = vad
        let parsed: Trace
        do {
            parsed = try Trace(csv: try String(contentsOfFile: trace, encoding: .utf8))
        } catch {
            throw CLIError("--trace \(trace): \(error)")
        }
        let speech: [Int16]
        do {
            speech = try WAV.readMono48k(path: input)
        } catch {
            throw CLIError("--input \(input): \(error)")
        }
        let (report, audio) = try MediaLab.run(trace: parsed, input: speech, config: config)
        try WAV.write(path: output, samples: audio, sampleRate: Audio.sampleRate, channels: 1)
        if json { return print(try JSONValue(encoding: report).prettyText()) }
        print(Self.describe(report))
    }

    static func describe(_ r: MediaLabReport) -> String {
        let s = r.receiver
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        let d = s.decisions
        return """
            playout      \(r.playout), profile \(r.profile), DTX \(r.dtx ? "on" : "off"), \
            payload \(f(r.payloadKbps)) kbit/s, \(r.packetsWithRedundancy) packets with a redundant copy
            audio        \(f(r.traceSeconds)) s of trace, \(f(r.outputSeconds)) s played
            packets      \(r.packetsSent) sent for \(r.framesIn) frames (\(r.framesSuppressedByDTX) silent frames not sent), \
            \(s.packetsReceived) received, \(s.packetsLost) lost, \(s.packetsLate) late, \(s.duplicates) duplicates\
            \(r.speechPercent.map { ", VAD: \(f($0)) % speech" } ?? "")
            delay        playout now/mean/p95 \(f(s.currentPlayoutDelayMs))/\(f(s.meanPlayoutDelayMs))/\(f(s.p95PlayoutDelayMs)) ms, \
            target \(f(s.targetDelayMs)) ms; network \(f(r.networkDelayMs)) ms; mouth-to-ear \(f(r.mouthToEarMs)) ms
            by minute    \(r.playoutDelayByMinuteMs.map(f).joined(separator: " ")) ms
            loss         late \(f(s.lateLossPercent)) %, concealment \(f(s.concealmentPercent)) %, FEC recoveries \(s.fecRecovered), \
            redundant copies played \(s.redundancyRecovered)
            playout      time-stretch \(f(s.timeStretchPercent)) %, comfort noise \(f(s.dtxPercent)) %, \
            drift \(s.driftPpm.map { f($0) + " ppm" } ?? "unknown"), spikes \(s.delaySpikes), jitter \(f(s.jitterMs)) ms
            decisions    normal \(d.normal), merge \(d.merge), accelerate \(d.accelerate), decelerate \(d.decelerate), \
            fec \(d.fec), expand \(d.expand), comfort noise \(d.comfortNoise)
            """
    }
}
