/**
 * Key codes of QEMU 7.2's keyboard path, as data: which Linux evdev key code
 * (`linux/input-event-codes.h`) virtio-keyboard sends for each QEMU key code (QKeyCode,
 * `qapi/ui.json`), which QKeyCode a QMP "number" key (QEMU's XT-style scan code numbering) stands
 * for, and which Linux key a browser's `KeyboardEvent.code` names.
 *
 * The facts come from the keycodemapdb database QEMU builds its tables from
 * (`ui/keycodemapdb/data/keymaps.csv`: one row per Linux key, with its AT set 1 scan code, its
 * HTML `code` name and its QKeyCode). Where several rows carry the same QKeyCode the last one
 * counts, as in QEMU's generated `qemu_input_map_qcode_to_linux`; a "number" is the set 1 code
 * with the 0xe0 prefix folded into bit 7 (and 0xb7 kept as an old alias of PrintScreen, 0x54).
 *
 * No imports, no code: the maps are built by `keycodes.ts`.
 */

/**
 * Every QKeyCode in QEMU 7.2's enum order, with the Linux key code virtio-keyboard sends for it
 * (0: none; QEMU prints "unmapped key" and sends nothing but the report's SYN).
 */
export const QKEYCODE_LINUX: readonly (readonly [qcode: string, linux: number])[] = [
  ['unmapped', 0], ['shift', 42], ['shift_r', 54], ['alt', 56], ['alt_r', 100], ['ctrl', 29], ['ctrl_r', 97],
  ['menu', 139], ['esc', 1], ['1', 2], ['2', 3], ['3', 4], ['4', 5], ['5', 6],
  ['6', 7], ['7', 8], ['8', 9], ['9', 10], ['0', 11], ['minus', 12], ['equal', 13],
  ['backspace', 14], ['tab', 15], ['q', 16], ['w', 17], ['e', 18], ['r', 19], ['t', 20],
  ['y', 21], ['u', 22], ['i', 23], ['o', 24], ['p', 25], ['bracket_left', 26], ['bracket_right', 27],
  ['ret', 28], ['a', 30], ['s', 31], ['d', 32], ['f', 33], ['g', 34], ['h', 35],
  ['j', 36], ['k', 37], ['l', 38], ['semicolon', 39], ['apostrophe', 40], ['grave_accent', 41], ['backslash', 43],
  ['z', 44], ['x', 45], ['c', 46], ['v', 47], ['b', 48], ['n', 49], ['m', 50],
  ['comma', 51], ['dot', 52], ['slash', 53], ['asterisk', 55], ['spc', 57], ['caps_lock', 58], ['f1', 59],
  ['f2', 60], ['f3', 61], ['f4', 62], ['f5', 63], ['f6', 64], ['f7', 65], ['f8', 66],
  ['f9', 67], ['f10', 68], ['num_lock', 69], ['scroll_lock', 70], ['kp_divide', 98], ['kp_multiply', 55], ['kp_subtract', 74],
  ['kp_add', 78], ['kp_enter', 96], ['kp_decimal', 83], ['sysrq', 99], ['kp_0', 82], ['kp_1', 79], ['kp_2', 80],
  ['kp_3', 81], ['kp_4', 75], ['kp_5', 76], ['kp_6', 77], ['kp_7', 71], ['kp_8', 72], ['kp_9', 73],
  ['less', 86], ['f11', 87], ['f12', 88], ['print', 99], ['home', 102], ['pgup', 104], ['pgdn', 109],
  ['end', 107], ['left', 105], ['up', 103], ['down', 108], ['right', 106], ['insert', 110], ['delete', 111],
  ['stop', 128], ['again', 129], ['props', 130], ['undo', 131], ['front', 132], ['copy', 133], ['open', 134],
  ['paste', 135], ['find', 136], ['cut', 137], ['lf', 101], ['help', 138], ['meta_l', 125], ['meta_r', 126],
  ['compose', 127], ['pause', 119], ['ro', 89], ['hiragana', 91], ['henkan', 92], ['yen', 124], ['muhenkan', 94],
  ['katakanahiragana', 93], ['kp_comma', 121], ['kp_equals', 117], ['power', 116], ['sleep', 142], ['wake', 143], ['audionext', 163],
  ['audioprev', 165], ['audiostop', 166], ['audioplay', 164], ['audiomute', 113], ['volumeup', 115], ['volumedown', 114], ['mediaselect', 226],
  ['mail', 155], ['calculator', 140], ['computer', 157], ['ac_home', 172], ['ac_back', 158], ['ac_forward', 159], ['ac_refresh', 173],
  ['ac_bookmarks', 156], ['lang1', 122], ['lang2', 123],
];

/** QMP key numbers (`{"type": "number"}`) with the QKeyCode each stands for; absent numbers mean `unmapped`. */
export const QNUM_QKEYCODE: readonly (readonly [qnum: number, qcode: string])[] = [
  [0x01, 'esc'], [0x02, '1'], [0x03, '2'], [0x04, '3'], [0x05, '4'], [0x06, '5'],
  [0x07, '6'], [0x08, '7'], [0x09, '8'], [0x0a, '9'], [0x0b, '0'], [0x0c, 'minus'],
  [0x0d, 'equal'], [0x0e, 'backspace'], [0x0f, 'tab'], [0x10, 'q'], [0x11, 'w'], [0x12, 'e'],
  [0x13, 'r'], [0x14, 't'], [0x15, 'y'], [0x16, 'u'], [0x17, 'i'], [0x18, 'o'],
  [0x19, 'p'], [0x1a, 'bracket_left'], [0x1b, 'bracket_right'], [0x1c, 'ret'], [0x1d, 'ctrl'], [0x1e, 'a'],
  [0x1f, 's'], [0x20, 'd'], [0x21, 'f'], [0x22, 'g'], [0x23, 'h'], [0x24, 'j'],
  [0x25, 'k'], [0x26, 'l'], [0x27, 'semicolon'], [0x28, 'apostrophe'], [0x29, 'grave_accent'], [0x2a, 'shift'],
  [0x2b, 'backslash'], [0x2c, 'z'], [0x2d, 'x'], [0x2e, 'c'], [0x2f, 'v'], [0x30, 'b'],
  [0x31, 'n'], [0x32, 'm'], [0x33, 'comma'], [0x34, 'dot'], [0x35, 'slash'], [0x36, 'shift_r'],
  [0x37, 'kp_multiply'], [0x38, 'alt'], [0x39, 'spc'], [0x3a, 'caps_lock'], [0x3b, 'f1'], [0x3c, 'f2'],
  [0x3d, 'f3'], [0x3e, 'f4'], [0x3f, 'f5'], [0x40, 'f6'], [0x41, 'f7'], [0x42, 'f8'],
  [0x43, 'f9'], [0x44, 'f10'], [0x45, 'num_lock'], [0x46, 'scroll_lock'], [0x47, 'kp_7'], [0x48, 'kp_8'],
  [0x49, 'kp_9'], [0x4a, 'kp_subtract'], [0x4b, 'kp_4'], [0x4c, 'kp_5'], [0x4d, 'kp_6'], [0x4e, 'kp_add'],
  [0x4f, 'kp_1'], [0x50, 'kp_2'], [0x51, 'kp_3'], [0x52, 'kp_0'], [0x53, 'kp_decimal'], [0x54, 'sysrq'],
  [0x56, 'less'], [0x57, 'f11'], [0x58, 'f12'], [0x59, 'kp_equals'], [0x5b, 'lf'], [0x64, 'open'],
  [0x65, 'paste'], [0x70, 'katakanahiragana'], [0x71, 'lang2'], [0x72, 'lang1'], [0x73, 'ro'], [0x77, 'hiragana'],
  [0x79, 'henkan'], [0x7b, 'muhenkan'], [0x7d, 'yen'], [0x7e, 'kp_comma'], [0x85, 'again'], [0x86, 'props'],
  [0x87, 'undo'], [0x8c, 'front'], [0x90, 'audioprev'], [0x99, 'audionext'], [0x9c, 'kp_enter'], [0x9d, 'ctrl_r'],
  [0x9e, 'menu'], [0xa0, 'audiomute'], [0xa1, 'calculator'], [0xa2, 'audioplay'], [0xa4, 'audiostop'], [0xae, 'volumedown'],
  [0xb0, 'volumeup'], [0xb2, 'ac_home'], [0xb5, 'kp_divide'], [0xb7, 'sysrq'], [0xb8, 'alt_r'], [0xbc, 'cut'],
  [0xc1, 'find'], [0xc6, 'pause'], [0xc7, 'home'], [0xc8, 'up'], [0xc9, 'pgup'], [0xcb, 'left'],
  [0xcd, 'right'], [0xcf, 'end'], [0xd0, 'down'], [0xd1, 'pgdn'], [0xd2, 'insert'], [0xd3, 'delete'],
  [0xdb, 'meta_l'], [0xdc, 'meta_r'], [0xdd, 'compose'], [0xde, 'power'], [0xdf, 'sleep'], [0xe3, 'wake'],
  [0xe6, 'ac_bookmarks'], [0xe7, 'ac_refresh'], [0xe8, 'stop'], [0xe9, 'ac_forward'], [0xea, 'ac_back'], [0xeb, 'computer'],
  [0xec, 'mail'], [0xed, 'mediaselect'], [0xf5, 'help'], [0xf8, 'copy'],
];

/** Browser `KeyboardEvent.code` values with the Linux key code of the same physical key. */
export const HTML_CODE_LINUX: readonly (readonly [code: string, linux: number])[] = [
  ['Escape', 1], ['Digit1', 2], ['Digit2', 3], ['Digit3', 4], ['Digit4', 5],
  ['Digit5', 6], ['Digit6', 7], ['Digit7', 8], ['Digit8', 9], ['Digit9', 10],
  ['Digit0', 11], ['Minus', 12], ['Equal', 13], ['Backspace', 14], ['Tab', 15],
  ['KeyQ', 16], ['KeyW', 17], ['KeyE', 18], ['KeyR', 19], ['KeyT', 20],
  ['KeyY', 21], ['KeyU', 22], ['KeyI', 23], ['KeyO', 24], ['KeyP', 25],
  ['BracketLeft', 26], ['BracketRight', 27], ['Enter', 28], ['ControlLeft', 29], ['KeyA', 30],
  ['KeyS', 31], ['KeyD', 32], ['KeyF', 33], ['KeyG', 34], ['KeyH', 35],
  ['KeyJ', 36], ['KeyK', 37], ['KeyL', 38], ['Semicolon', 39], ['Quote', 40],
  ['Backquote', 41], ['ShiftLeft', 42], ['Backslash', 43], ['KeyZ', 44], ['KeyX', 45],
  ['KeyC', 46], ['KeyV', 47], ['KeyB', 48], ['KeyN', 49], ['KeyM', 50],
  ['Comma', 51], ['Period', 52], ['Slash', 53], ['ShiftRight', 54], ['NumpadMultiply', 55],
  ['AltLeft', 56], ['Space', 57], ['CapsLock', 58], ['F1', 59], ['F2', 60],
  ['F3', 61], ['F4', 62], ['F5', 63], ['F6', 64], ['F7', 65],
  ['F8', 66], ['F9', 67], ['F10', 68], ['NumLock', 69], ['ScrollLock', 70],
  ['Numpad7', 71], ['Numpad8', 72], ['Numpad9', 73], ['NumpadSubtract', 74], ['Numpad4', 75],
  ['Numpad5', 76], ['Numpad6', 77], ['NumpadAdd', 78], ['Numpad1', 79], ['Numpad2', 80],
  ['Numpad3', 81], ['Numpad0', 82], ['NumpadDecimal', 83], ['Lang5', 85], ['IntlBackslash', 86],
  ['F11', 87], ['F12', 88], ['IntlRo', 89], ['Katakana', 90], ['Lang3', 90],
  ['Hiragana', 91], ['Lang4', 91], ['Convert', 92], ['KanaMode', 93], ['NonConvert', 94],
  ['NumpadEnter', 96], ['ControlRight', 97], ['NumpadDivide', 98], ['PrintScreen', 99], ['AltRight', 100],
  ['Home', 102], ['ArrowUp', 103], ['PageUp', 104], ['ArrowLeft', 105], ['ArrowRight', 106],
  ['End', 107], ['ArrowDown', 108], ['PageDown', 109], ['Insert', 110], ['Delete', 111],
  ['AudioVolumeMute', 113], ['AudioVolumeDown', 114], ['AudioVolumeUp', 115], ['Power', 116], ['NumpadEqual', 117],
  ['Pause', 119], ['NumpadComma', 121], ['Lang1', 122], ['Lang2', 123], ['IntlYen', 124],
  ['MetaLeft', 125], ['MetaRight', 126], ['ContextMenu', 127], ['BrowserStop', 128], ['Again', 129],
  ['Props', 130], ['Undo', 131], ['Copy', 133], ['Open', 134], ['Paste', 135],
  ['Find', 136], ['Cut', 137], ['Help', 138], ['LaunchApp2', 140], ['Sleep', 142],
  ['WakeUp', 143], ['LaunchMail', 155], ['BrowserFavorites', 156], ['LaunchApp1', 157], ['BrowserBack', 158],
  ['BrowserForward', 159], ['Eject', 162], ['MediaTrackNext', 163], ['MediaPlayPause', 164], ['MediaTrackPrevious', 165],
  ['MediaStop', 166], ['BrowserHome', 172], ['BrowserRefresh', 173], ['NumpadParenLeft', 179], ['NumpadParenRight', 180],
  ['F13', 183], ['F14', 184], ['F15', 185], ['F16', 186], ['F17', 187],
  ['F18', 188], ['F19', 189], ['F20', 190], ['F21', 191], ['F22', 192],
  ['F23', 193], ['F24', 194], ['Suspend', 205], ['BrowserSearch', 217], ['MediaSelect', 226],
  ['Select', 353], ['NumpadClear', 355], ['Fn', 464], ['NumpadStar', 522], ['NumpadHash', 523],
];
