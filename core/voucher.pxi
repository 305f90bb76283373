# Electronic medical-insurance vouchers (医保电子凭证, SPEC §10.5): verification with the insured province's key.
#
# voucher_keys.jsonl ({"province": "230000", "key_hex": "..."}) is optional in a data set; its keys are
# held here and in the index image only, are never returned to Python callers and never appear in a
# message or a log.  A token is ``psn_no.expiry.mac``: ``expiry`` a UTC time yyyymmddhhmm, ``mac`` the
# first 16 bytes (32 hex digits) of HMAC-SHA256(key, "psn_no.expiry").

import hashlib
import hmac as _hmac

cdef int VOUCHER_MAC_HEX = 32
cdef int MIN_VOUCHER_KEY_BYTES = 16


cdef int _put_voucher_key(Index self, dict row) except -1:
    cdef uint32_t prov = _admdvs_field(row, "province")
    if prov % 10000 != 0:
        raise YidiError("INVALID_CODE", what=f"凭证密钥所属省份 {row['province']}", problem="须为省级代码（以 0000 结尾）",
                        field="province")
    v = _field(row, "key_hex")
    try:
        key = bytes.fromhex(v) if type(v) is str else None
    except ValueError:
        key = None
    if key is None or len(key) < MIN_VOUCHER_KEY_BYTES:
        # the value is not echoed: it is a secret
        raise YidiError("INVALID_ARGUMENT", what="key_hex", problem=f"须为至少 {MIN_VOUCHER_KEY_BYTES} 字节的十六进制密钥",
                        field="key_hex")
    if prov in self._voucher_keys:
        raise YidiError("INVALID_CODE", what=f"省份 {row['province']} 的凭证密钥", problem="重复", field="province")
    self._voucher_keys[prov] = key
    return 0


def voucher_mac(bytes key, str psn_no, str expiry):
    """The mac of a voucher token (the first 16 bytes of HMAC-SHA256, hex)."""
    return _hmac.new(key, f"{psn_no}.{expiry}".encode("ascii"), hashlib.sha256).digest()[:16].hex()


cdef str _verify_voucher(Index self, object token, int64_t now):
    cdef int32_t pi
    bad = YidiError("CREDENTIAL_INVALID", problem="无效或已过期")
    if type(token) is not str or not token.isascii() or len(token) > MAX_ID_LEN + 13 + VOUCHER_MAC_HEX + 2:
        raise bad
    parts = token.split(".")
    if len(parts) != 3:
        raise bad
    psn_no, expiry, mac = parts
    if len(expiry) != 12 or not expiry.isdigit() or len(mac) != VOUCHER_MAC_HEX:
        raise bad
    pi = _person_idx(self, psn_no) if 1 <= len(psn_no) <= MAX_ID_LEN else -1
    if pi < 0:
        raise bad
    key = self._voucher_keys.get(province_of(self.st.persons[pi].insuplc_admdvs))
    if key is None:
        raise bad
    # the mac first, in constant time, so that expiry answers nothing about an unsigned token
    if not _hmac.compare_digest(voucher_mac(key, psn_no, expiry), mac.lower()):
        raise bad
    if int(expiry) < now:
        raise bad
    return psn_no
