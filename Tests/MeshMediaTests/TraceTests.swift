import MeshMedia
import Testing

/// The media-lab trace format (docs/media-lab.md).
@Suite struct TraceTests {
    @Test func decimalMillisecondsAreAcceptedAndRounded() throws {
        let trace = try Trace(csv: "seq,send_ms,arrival_ms\n0,0.000,41.356\n1,20.000,\n2,40.4,60.5\n")
        #expect(trace.rows == [
            Trace.Row(sequence: 0, sendMs: 0, arrivalMs: 41),
            Trace.Row(sequence: 1, sendMs: 20, arrivalMs: nil),
            Trace.Row(sequence: 2, sendMs: 40, arrivalMs: 61),
        ])
    }

    @Test(arguments: ["0,0,nan", "0,inf,1", "0,0,4x", "0,0", "0.5,0,1"])
    func malformedRowsAreRefusedNamingTheLine(row: String) {
        #expect(throws: MediaError("trace line 2: expected seq,send_ms,arrival_ms, got \(row)")) {
            try Trace(csv: "seq,send_ms,arrival_ms\n" + row + "\n")
        }
    }
}
