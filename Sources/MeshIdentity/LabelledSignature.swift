/// Signatures over Keccak-256(label ‖ body), the shape of every signed record in the mesh (presence records,
/// gossip host announcements). Each kind of record has its own label, so a signature made for one kind is never
/// valid for another.
extension PrivateKey {
    public func sign(label: [UInt8], body: [UInt8]) -> Signature {
        sign(digest: Keccak.hash256(label + body))
    }
}

extension Signature {
    /// The address that signed `body` under `label`; compare it with the address the record claims.
    public func signer(label: [UInt8], body: [UInt8]) -> WalletAddress? {
        recoverAddress(digest: Keccak.hash256(label + body))
    }
}
