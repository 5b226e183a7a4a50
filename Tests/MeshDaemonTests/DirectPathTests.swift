import MeshCall
@testable import MeshDaemon
import Testing

/// The pure parts of direct paths (docs/calls.md, "Direct paths"): ICE messages sealed under the call's key, and the
/// window that drops the second copy of a packet that came over both paths.
@Suite struct DirectPathTests {
    private let key = IceKey(callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))

    @Test func iceMessagesRoundTripUnderTheCallKey() {
        let messages: [IceSignal.Body] = [
            .credentials(ufrag: "ab12", password: "a-password-of-22-chars"),
            .candidate("a=candidate:2 1 UDP 1679819007 198.18.0.101 53777 typ srflx raddr 10.1.0.2 rport 53777"),
            .endOfCandidates, .fallback,
        ]
        for (index, body) in messages.enumerated() {
            let signal = IceSignal(fromCaller: index % 2 == 0, generation: UInt32(index + 1), body: body)
            #expect(key.open(key.seal(signal)) == signal)
        }
    }

    /// Another call's key, one flipped bit anywhere, or a truncated message: dropped (the node counts `iceBadMac`).
    @Test func aWrongKeyOrAlteredMessageIsRefused() {
        let sealed = key.seal(IceSignal(fromCaller: true, generation: 7, body: .candidate("a=candidate:1 1 UDP 2 10.0.0.1 5 typ host")))
        let other = IceKey(callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 3, count: 30))
        #expect(other.open(sealed) == nil)
        for index in sealed.indices {
            var altered = sealed
            altered[index] ^= 0x01
            #expect(key.open(altered) == nil, "bit flipped at \(index)")
        }
        #expect(key.open(Array(sealed.dropLast())) == nil)
        #expect(key.open([]) == nil)
    }

    /// Keepalives over the direct path are sealed under the call's keepalive key: the peer takes each one once, in
    /// order; a replay, an older one, this end's own reflected back, another attempt's, another call's, one with any
    /// bit flipped or cut short is refused (the node counts it in `iceBadMac` and it proves nothing).
    @Test func keepalivesAreAuthenticFreshAndFromThePeer() {
        let (caller, callee) = (DirectPath(caller: true, key: key, now: 0), DirectPath(caller: false, key: key, now: 0))
        (caller.generation, callee.generation) = (3, 3)
        let (first, second) = (caller.keepalive(), caller.keepalive())
        #expect(first.starts(with: IceKey.keepaliveMagic) && first.count == 6 + 1 + 4 + 4 + 16)
        #expect(callee.takeKeepalive(first) && callee.takeKeepalive(second))
        #expect(!callee.takeKeepalive(second) && !callee.takeKeepalive(first), "a replay, an older one")
        #expect(!caller.takeKeepalive(caller.keepalive()), "a reflection of the caller's own")
        #expect(caller.takeKeepalive(callee.keepalive()), "the other way")
        let other = DirectPath(caller: false, key: IceKey(callerToCallee: Array(repeating: 1, count: 30),
                                                          calleeToCaller: Array(repeating: 3, count: 30)), now: 0)
        other.generation = 3
        let next = caller.keepalive()
        #expect(!other.takeKeepalive(next), "another call's key")
        for index in next.indices {
            var altered = next
            altered[index] ^= 0x01
            #expect(!callee.takeKeepalive(altered), "bit flipped at \(index)")
        }
        #expect(!callee.takeKeepalive(Array(next.dropLast())))
        callee.generation = 4
        #expect(!callee.takeKeepalive(next), "another attempt's")
        callee.generation = 3
        #expect(callee.takeKeepalive(next))
    }

    @Test func theSequenceWindowDropsCopiesNotNewPackets() {
        var window = SequenceWindow()
        #expect(!window.contains(100))
        window.insert(100)
        #expect(window.contains(100))
        #expect(!window.contains(101) && !window.contains(99))
        window.insert(102)
        #expect(window.contains(100) && window.contains(102) && !window.contains(101))
        window.insert(101)
        #expect(window.contains(101))
        // Far ahead: the old numbers leave the window (libsrtp's own replay check covers what is older).
        window.insert(102 &+ 64)
        #expect(!window.contains(102) && window.contains(102 &+ 64))
        // Across the 16-bit wrap.
        var wrap = SequenceWindow()
        wrap.insert(65_534)
        wrap.insert(1)
        #expect(wrap.contains(65_534) && wrap.contains(1) && !wrap.contains(0) && !wrap.contains(65_535))
    }
}
